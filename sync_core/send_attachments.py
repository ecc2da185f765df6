"""The attachments of one send: checked, measured and read without decoding them whole.

They arrive base64 in the JSON body of ``POST /api/send``. Their bytes are needed three times (Graph's attachment
POST takes base64 as it is; an upload session and the blob store take the bytes in ranges), so the base64 text is
kept and decoded range by range (``Base64Range``): a 10 MB file costs its 13.3 MB of base64 text and a few MB of
buffers, never another whole copy (``make bench`` measures it).

Sizes: one ``POST …/attachments`` for a file under 3 MB, the strictest reading of "under 3 MB" (a Graph request is
at most 4 MB, and base64 plus JSON take the rest); an upload session for 3 MB and more, sent in ranges of
3,932,160 bytes (under "4 MB" in any reading, and a multiple of 320 KiB) (CONTRACT.md section 5). The whole
message (body and attachments) must fit the tenant's message size limit (``MAX_MESSAGE_BYTES``): over it is a 413
naming the limit, before anything reaches Graph.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from sync_core.results import BadRequest, Problem
from sync_core.send_request import SendRequest

POST_LIMIT = 3_000_000  # bytes: under it one POST, from it on an upload session
RANGE_BYTES = 12 * 320 * 1024  # 3,932,160 bytes per upload-session PUT
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DECODE_BLOCK = 48 * 1024  # base64 characters decoded at a time (a multiple of 4)


class PayloadTooLarge(Problem):
    status = 413


def mebibytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


@dataclass(frozen=True)
class OutgoingAttachment:
    """One attachment of a send, its bytes still base64 (validated, so every range decodes)."""

    index: int
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    base64_text: str

    @property
    def needs_upload_session(self) -> bool:
        return self.size >= POST_LIMIT

    def read(self, start: int = 0, end: int | None = None) -> Base64Range:
        """A reader of the decoded bytes ``[start, end)`` (the whole file by default)."""
        return Base64Range(self.base64_text, start, self.size if end is None else end)


class Base64Range:
    """A file-like reader of decoded bytes ``[start, end)`` of base64 text, decoded a block at a time.

    It has ``len()`` and ``read()`` but no ``seek``/``tell``: ``requests`` then sends it with a Content-Length
    (not chunked), and the blob client uploads it block by block.
    """

    def __init__(self, text: str, start: int, end: int) -> None:
        self._text, self._position, self._end = text, start, end
        self._buffer = b""

    def __len__(self) -> int:
        return self._end - self._position + len(self._buffer)

    def __iter__(self) -> Base64Range:
        return self

    def __next__(self) -> bytes:
        chunk = self.read(64 * 1024)
        if not chunk:
            raise StopIteration
        return chunk

    def read(self, size: int = -1) -> bytes:
        wanted = len(self) if size is None or size < 0 else min(size, len(self))
        pieces, have = [self._buffer], len(self._buffer)
        while have < wanted:
            group = self._position // 3  # the 4-character group holding this byte
            first = group * 4
            decoded = base64.b64decode(self._text[first : first + _DECODE_BLOCK])
            skip = self._position - group * 3
            piece = decoded[skip : skip + self._end - self._position]
            if not piece:  # validated base64 always has the bytes its size promised
                raise ValueError(f"base64 text ends before byte {self._position}")
            pieces.append(piece)
            have += len(piece)
            self._position += len(piece)
        joined = b"".join(pieces)  # one copy, however many blocks it took
        out, self._buffer = joined[:wanted], joined[wanted:]
        return out


def _size_of(text: str, index: int, name: str) -> int:
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise BadRequest(
            f"attachment '{name}' is not valid base64", fields=[{"field": f"attachments.{index}.content_base64"}]
        )
    padding = (text[-2:] == "==") + (text[-1:] == "=")  # (not rstrip: that would copy the whole text)
    return len(text) // 4 * 3 - padding


def outgoing_attachments(request: SendRequest, max_message_bytes: int) -> list[OutgoingAttachment]:
    """The request's attachments, checked before anything reaches Graph: valid base64 (400 naming the field), and
    the whole message within the tenant's limit (413 naming the limit and every file's size)."""
    out = [
        OutgoingAttachment(
            index=i,
            name=item.name,
            content_type=item.content_type,
            size=_size_of(item.content_base64, i, item.name),
            is_inline=item.is_inline,
            content_id=item.content_id,
            base64_text=item.content_base64,
        )
        for i, item in enumerate(request.attachments)
    ]
    body = len((request.html or "").encode()) + len((request.text or "").encode())
    total = body + sum(a.size for a in out)
    if total > max_message_bytes:
        files = ", ".join(f"'{a.name}' {a.size} bytes" for a in out) or "no attachments"
        raise PayloadTooLarge(
            f"the message is {total} bytes ({files}, body {body} bytes); the limit is {max_message_bytes} bytes "
            f"({mebibytes(max_message_bytes)}, the mailbox's message size limit, MAX_MESSAGE_BYTES)",
            fields=[{"field": "attachments", "limit": str(max_message_bytes), "size": str(total)}],
        )
    return out
