"""HMAC-SHA256 signatures shared with Enrollio: one scheme for API requests, one for connect links.

Requests carry ``X-Enrollio-Timestamp`` (Unix seconds) and ``X-Enrollio-Signature: v1=<hex>``, the HMAC of
``"{timestamp}\\n{METHOD}\\n{path?query}\\n" + body``. Method and path are signed too, so a captured signature
cannot be replayed against another endpoint or another user's URL; the timestamp bounds replay in time.
Connect links sign their query parameters (sorted) and carry their own expiry.
Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode

TIMESTAMP_HEADER = "X-Enrollio-Timestamp"
SIGNATURE_HEADER = "X-Enrollio-Signature"
SCHEME = "v1"
LINK_SIGNATURE_PARAM = "sig"


class Unauthorized(Exception):
    """The caller could not prove it is Enrollio (maps to HTTP 401). ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _request_message(timestamp: str, method: str, path_and_query: str, body: bytes) -> bytes:
    return f"{timestamp}\n{method.upper()}\n{path_and_query}\n".encode() + body


def sign_request(secret: bytes, timestamp: int, method: str, path_and_query: str, body: bytes) -> dict[str, str]:
    """The headers Enrollio sends with a request (also what our tests and demo use)."""
    mac = _mac(secret, _request_message(str(timestamp), method, path_and_query, body))
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: f"{SCHEME}={mac}"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def verify_request(
    secret: bytes,
    headers: Mapping[str, str],
    method: str,
    path_and_query: str,
    body: bytes,
    now: dt.datetime,
    window_seconds: int,
) -> None:
    """Raise ``Unauthorized`` unless the request is signed with ``secret`` within the replay window."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise Unauthorized(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now.timestamp() - sent_at) > window_seconds:
        raise Unauthorized(f"{TIMESTAMP_HEADER} is outside the {window_seconds}s replay window")
    scheme, _, given = signature.partition("=")
    expected = _mac(secret, _request_message(timestamp, method, path_and_query, body))
    if scheme != SCHEME or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("bad signature")


def _link_message(params: Mapping[str, str]) -> bytes:
    items = sorted((k, v) for k, v in params.items() if k != LINK_SIGNATURE_PARAM)
    return b"connect-link\n" + urlencode(items).encode()


def sign_link(secret: bytes, params: Mapping[str, str]) -> dict[str, str]:
    """``params`` plus their signature, ready to urlencode into a connect link."""
    return {**params, LINK_SIGNATURE_PARAM: _mac(secret, _link_message(params))}


def verify_link(secret: bytes, params: Mapping[str, str], now: dt.datetime, expiry_param: str = "exp") -> None:
    """Raise ``Unauthorized`` unless ``params`` carry a valid signature and an expiry still in the future."""
    given = params.get(LINK_SIGNATURE_PARAM, "")
    if not hmac.compare_digest(given.encode(), _mac(secret, _link_message(params)).encode()):
        raise Unauthorized("bad link signature")
    try:
        expires = int(params.get(expiry_param, ""))
    except ValueError:
        raise Unauthorized(f"link parameter '{expiry_param}' must be Unix seconds") from None
    if now.timestamp() > expires:
        raise Unauthorized("link expired")
