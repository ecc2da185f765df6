"""A Microsoft Graph + identity platform emulator, faithful to docs/graph-contract.md.

One HTTPS server (self-signed certificate made at start-up) serving:
- the identity platform: OIDC discovery, /authorize, /token (``identity.py``);
- Graph v1.0 mail: users, messages, attachments, send, delta (``mail.py``);
- Graph v1.0 subscriptions, the validation handshake and change/lifecycle notifications (``subscriptions.py``);
- control endpoints under ``/_emulator/`` that play the rest of the mail world (never mistaken for Graph);
- throttling and fault injection, off by default (``faults.py``).
"""

from devtools.emulator.server import EmulatorServer
from devtools.emulator.state import Mailbox, World

__all__ = ["EmulatorServer", "Mailbox", "World"]
