"""HMAC-SHA256 signatures shared with Enrollio: one scheme for API requests, one for connect links.

Requests carry ``X-Enrollio-Timestamp`` (Unix seconds, plain digits, at most a minute ahead),
``X-Enrollio-Nonce`` (16 to 64 characters of ``A-Z a-z 0-9 _ -``, fresh for every request) and
``X-Enrollio-Signature: v2=<hex>``, the HMAC of the canonical string::

    {timestamp}\\n{nonce}\\n{METHOD}\\n{canonical path[?canonical query]}\\n{Idempotency-Key, or nothing}\\n{body}

The path and query are signed in one spelling (``canonical_target``, README "Signed requests"), not as the URL's
bytes: clients and hosts escape a URL differently (Azure's host re-escapes the decoded path). Method, path, query,
the Idempotency-Key and the body are signed, so a captured signature cannot be replayed against another endpoint,
another user's URL or with another key; the timestamp bounds it in time, and a state-changing request's signature
is accepted once (``sync_core.replay``). The nonce makes two legitimate requests with the same content in the same
second two signatures.
Connect links sign their query parameters (sorted) and carry their own expiry, at most ``MAX_LINK_LIFETIME`` ahead.
Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode

TIMESTAMP_HEADER = "X-Enrollio-Timestamp"
NONCE_HEADER = "X-Enrollio-Nonce"
SIGNATURE_HEADER = "X-Enrollio-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "v2"
LINK_SIGNATURE_PARAM = "sig"
MAX_LINK_LIFETIME = dt.timedelta(minutes=15)
# Clocks drift by seconds: a timestamp further ahead than this is refused, so a signature lives at most the window
# plus this (a timestamp 300 s ahead would have lived 600 s).
MAX_CLOCK_AHEAD_SECONDS = 60
# Unix seconds as plain ASCII digits without a leading zero: one spelling per instant (int() also reads "+1", " 1",
# "1_0" and fullwidth digits), and never a number too large to compare with the clock.
_UNIX_SECONDS = re.compile(r"0|[1-9][0-9]{0,11}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_HEX = re.compile(r"[0-9a-f]{64}")


class Unauthorized(Exception):
    """The caller could not prove it is Enrollio (maps to HTTP 401). ``reason`` is safe to show; ``field`` names
    the header or parameter at fault; ``code`` is the error code a client acts on."""

    def __init__(self, reason: str, field: str = SIGNATURE_HEADER, code: str = "unauthorized") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.code = code


@dataclass(frozen=True)
class Verified:
    """A request whose signature holds: the signature (to be spent once) and when it stops being accepted."""

    signature: str
    expires_at: dt.datetime


def _mac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _escaped(text: str, safe: str = "") -> str:
    # UTF-8, every byte percent-encoded (uppercase hex) but A-Z a-z 0-9 - . _ ~ and ``safe``; never raises (a lone
    # surrogate, which no UTF-8 URL can hold, becomes "?").
    return quote(text, safe=safe, encoding="utf-8", errors="replace")


def canonical_target(path_and_query: str) -> str:
    """The path and query as a signature covers them: one spelling, whatever the escapes were.

    Hosts hand the URL on in their own way (Azure rebuilds the path from its decoded form and re-escapes it;
    others decode what they can), so the signature covers neither the bytes sent nor the host's URL but this: the
    path percent-decoded and re-encoded, then the query's ``name=value`` pairs in the order sent, each form-decoded
    (``+`` is a space) and re-encoded, joined by ``&``; no ``?`` when there are no pairs.
    """
    path, _, query = path_and_query.partition("#")[0].partition("?")
    target = _escaped(unquote(path), safe="/")
    pairs = parse_qsl(query, keep_blank_values=True)
    if pairs:
        target += "?" + "&".join(f"{_escaped(name)}={_escaped(value)}" for name, value in pairs)
    return target


def canonical_request(
    timestamp: str, nonce: str, method: str, path_and_query: str, idempotency_key: str, body: bytes
) -> bytes:
    """The bytes a request signature covers (the README's HTTP API section shows the same)."""
    target = canonical_target(path_and_query)
    return f"{timestamp}\n{nonce}\n{method.upper()}\n{target}\n{idempotency_key}\n".encode() + body


def sign_request(
    secret: bytes,
    timestamp: int,
    method: str,
    path_and_query: str,
    body: bytes,
    *,
    nonce: str,
    idempotency_key: str = "",
) -> dict[str, str]:
    """The headers Enrollio sends with a request (also what our tests and demo use); the Idempotency-Key too."""
    message = canonical_request(str(timestamp), nonce, method, path_and_query, idempotency_key, body)
    headers = {
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: f"{SCHEME}={_mac(secret, message)}",
    }
    if idempotency_key:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    return headers


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
) -> Verified:
    """The verified signature; ``Unauthorized`` naming the header at fault unless the request is signed with
    ``secret`` within the replay window."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise Unauthorized(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header", missing)
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds (ASCII digits)", TIMESTAMP_HEADER)
    sent_at = int(timestamp)
    age = now.timestamp() - sent_at
    if age > window_seconds:
        raise Unauthorized(f"{TIMESTAMP_HEADER} is outside the {window_seconds}s replay window", TIMESTAMP_HEADER)
    if -age > MAX_CLOCK_AHEAD_SECONDS:
        ahead = f"{TIMESTAMP_HEADER} is more than {MAX_CLOCK_AHEAD_SECONDS}s ahead of this service's clock"
        raise Unauthorized(ahead, TIMESTAMP_HEADER)
    nonce = _header(headers, NONCE_HEADER) or ""
    if not _NONCE.fullmatch(nonce):
        raise Unauthorized(f"{NONCE_HEADER} must be 16 to 64 characters of A-Z a-z 0-9 _ -", NONCE_HEADER)
    scheme, _, given = signature.partition("=")
    key = _header(headers, IDEMPOTENCY_HEADER) or ""
    expected = _mac(secret, canonical_request(timestamp, nonce, method, path_and_query, key, body))
    if scheme != SCHEME or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("bad signature")
    return Verified(expected, dt.datetime.fromtimestamp(sent_at + window_seconds, dt.UTC))


def _link_message(params: Mapping[str, str]) -> bytes:
    items = sorted((k, v) for k, v in params.items() if k != LINK_SIGNATURE_PARAM)
    return b"connect-link\n" + urlencode(items).encode()


def sign_link(secret: bytes, params: Mapping[str, str]) -> dict[str, str]:
    """``params`` plus their signature, ready to urlencode into a connect link."""
    return {**params, LINK_SIGNATURE_PARAM: _mac(secret, _link_message(params))}


def verify_link(secret: bytes, params: Mapping[str, str], now: dt.datetime, expiry_param: str = "exp") -> Verified:
    """The verified link signature and its expiry; ``Unauthorized`` unless ``params`` carry a valid signature and
    an expiry in the future but no more than ``MAX_LINK_LIFETIME`` ahead."""
    given = params.get(LINK_SIGNATURE_PARAM, "")
    expected = _mac(secret, _link_message(params))
    if not _HEX.fullmatch(given) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("bad link signature", LINK_SIGNATURE_PARAM)
    text = params.get(expiry_param, "")
    try:
        if not _UNIX_SECONDS.fullmatch(text):
            raise ValueError(text)
        expires = dt.datetime.fromtimestamp(int(text), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise Unauthorized(f"link parameter '{expiry_param}' must be Unix seconds", expiry_param) from None
    if now > expires:
        raise Unauthorized("link expired", expiry_param)
    if expires - now > MAX_LINK_LIFETIME:
        raise Unauthorized("link lifetime exceeds 15 minutes: Enrollio makes a fresh link for each use", expiry_param)
    return Verified(expected, expires)
