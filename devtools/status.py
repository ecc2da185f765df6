"""``make status``: the operator's CLI (``python -m sync_core.ops status``) on this machine's local data.

Which data, in this order:
- a running ``make run``: it writes its settings to ``.run/local.settings.json`` while it runs;
- otherwise the last ``make demo``: its Azurite keeps its data in ``.run/demo/azurite/``, and an Azurite is
  started on that folder for as long as the status takes.
Arguments are passed on: ``make status ARGS="--json"``, ``ARGS="--since 30d"``, ``ARGS="skips --limit 50"``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from devtools.azurite import Azurite
from devtools.run import RUN_DIR, RUN_SETTINGS
from sync_core.ops.cli import command_names
from sync_core.ops.cli import main as ops
from sync_core.ops.context import read_local_settings

DEMO_AZURITE = RUN_DIR / "demo" / "azurite"


def _answers(connection_string: str) -> bool:
    """True when the storage the connection string names accepts connections (the run is still up)."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    endpoint = urlsplit(parts.get("QueueEndpoint", ""))
    if not endpoint.hostname or not endpoint.port:
        return False
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port), timeout=1):
            return True
    except OSError:
        return False


def with_command(args: list[str]) -> list[str]:
    """``status`` unless a command is named: its options (``--since 30d``, ``--limit 5``) come after it."""
    return args if set(args) & set(command_names()) else ["status", *args]


def main(argv: Sequence[str] | None = None) -> int:
    args = with_command(list(sys.argv[1:] if argv is None else argv))
    if RUN_SETTINGS.exists():
        values = read_local_settings(RUN_SETTINGS)
        if _answers(values.get("AzureWebJobsStorage", "")):
            print(f"The running `make run` stack ({RUN_SETTINGS}):", file=sys.stderr)
            return ops(["--settings", str(RUN_SETTINGS), *args], environ={})
    if DEMO_AZURITE.exists():
        print(f"The last `make demo`'s data ({DEMO_AZURITE}):", file=sys.stderr)
        with Azurite(location=DEMO_AZURITE, log_path=DEMO_AZURITE.parent / "azurite-status.log") as azurite:
            return ops(args, environ={"AzureWebJobsStorage": azurite.connection_string})
    print("Nothing local to show: start `make run` (then connect a mailbox) or run `make demo` first.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
