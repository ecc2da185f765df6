"""A signature Enrollio made is accepted once where it changes something: replayed, it is a 401 saying so.

A state-changing request (POST) spends its signature before anything is done; reads (GET) stay retryable within
the window. A connect link spends its signature when it starts a sign-in, so a link works once, and a link seen
in a log afterwards is spent (or expired) already. The records expire with what they protect (hourly timer).
"""

from __future__ import annotations

from collections.abc import Mapping

from sync_core.services import Services
from sync_core.signing import LINK_SIGNATURE_PARAM, Unauthorized, Verified, verify_request

REQUEST = "request"
LINK = "link"
# The error code of a spent signature: sign the request afresh and send it again (with the same Idempotency-Key a
# send is answered from its first call). Rare for a legitimate request, e.g. a retry by an HTTP client that resent
# the same signed bytes after a lost answer.
ALREADY_USED = "signature_already_used"
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def authenticate(headers: Mapping[str, str], method: str, path_and_query: str, body: bytes, services: Services) -> None:
    """Enrollio's signature checked (``Unauthorized`` naming the header at fault), and spent unless a read."""
    verified = verify_request(
        services.shared_secret,
        headers,
        method,
        path_and_query,
        body,
        services.clock.now(),
        services.settings.signature_window_seconds,
    )
    if method.upper() not in READS and not services.spent_signatures.spend(
        REQUEST, verified.signature, verified.expires_at
    ):
        raise Unauthorized(
            "this signature was already used: sign every request afresh, with a new nonce", code=ALREADY_USED
        )


def spend_link(verified: Verified, services: Services) -> None:
    """The connect link's signature spent; ``Unauthorized`` when the link was opened before."""
    if not services.spent_signatures.spend(LINK, verified.signature, verified.expires_at):
        raise Unauthorized(
            "this connect link was already used: start again from Enrollio for a new one", LINK_SIGNATURE_PARAM
        )


def prune(services: Services) -> int:
    """Forget the signatures of every hour that has passed (they are refused as stale or expired anyway)."""
    return services.spent_signatures.prune((REQUEST, LINK), services.clock.now())
