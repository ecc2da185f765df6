"""The threading headers of a message's MIME, read without its body: for the Sent Items copy, whose JSON has none.

CONTRACT.md section 4: Graph returns no ``internetMessageHeaders`` for the copy in Sent Items; the headers are in
its MIME (``GET …/messages/{id}/$value``). Only the header section is read (up to the first empty line), as the
bytes arrive, and at most ``MAX_HEADER_BYTES`` of it: the body and attachments behind it are never downloaded.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterable
from email.parser import BytesHeaderParser

from sync_core.matching import parse_message_ids

# A header section holds a few KiB; a reply to 3,000 recipients or with a 40,000-character subject, a few hundred.
MAX_HEADER_BYTES = 1024 * 1024
_END = (b"\r\n\r\n", b"\n\n")


def header_section(chunks: Iterable[bytes], limit: int = MAX_HEADER_BYTES) -> bytes:
    """The bytes of a MIME message up to the end of its headers (or ``limit`` bytes, whichever comes first)."""
    head = bytearray()
    for chunk in chunks:
        start = max(0, len(head) - 3)  # the empty line may straddle two chunks
        head += chunk
        ends = [i + len(end) for end in _END if (i := head.find(end, start)) >= 0]
        if ends:
            return bytes(head[: min(ends)])
        if len(head) >= limit:
            return bytes(head[:limit])
    return bytes(head)


def threading_ids(head: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The Message-IDs of the ``In-Reply-To`` and ``References`` headers of a MIME header section."""
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return (
        parse_message_ids(str(headers.get("In-Reply-To") or "")),
        parse_message_ids(str(headers.get("References") or "")),
    )
