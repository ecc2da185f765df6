"""Standard Webhooks signatures for the events this service posts to Enrollio (pure, no I/O).

The Standard Webhooks specification (standardwebhooks.com, "Signature scheme"): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``; the signature is HMAC-SHA256 with the secret's bytes, base64-encoded and
versioned ``v1,<base64>`` in the ``webhook-signature`` header, a space-separated list: while the secret is rotated
(``ENROLLIO_EVENTS_SECRET`` holds the new and the old, space-separated) each delivery carries one signature per
secret, and a receiver holding either verifies it; the secret is written ``whsec_`` + base64 of its bytes (24 to 64
bytes recommended). Enrollio verifies with any Standard Webhooks library (``tests/unit/test_event_signing.py``
checks these bytes against the reference one and against the specification's own example).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

# The prefix Standard Webhooks secrets are written with, not a secret.
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class BadSecret(ValueError):
    """The secret is not ``whsec_`` + base64 of 24 to 64 bytes (the message says which part is wrong)."""


def secret_bytes(secret: str) -> bytes:
    """The key of a ``whsec_`` secret; ``BadSecret`` naming what is wrong (never echoing the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(f"must be {SECRET_PREFIX!r} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise BadSecret(f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes (it holds {len(key)})")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery attempt (the timestamp is the attempt's: receivers refuse old ones), signed
    with each key."""
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signature(key, webhook_id, timestamp, body) for key in keys),
    }
