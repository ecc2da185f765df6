"""The attachments of one send: checked, measured and read without decoding them whole.

They arrive base64 in the JSON body of ``POST /api/send``. Their bytes are needed three times (Graph's attachment
POST takes base64 as it is; an upload session and the blob store take the bytes in ranges), so the base64 text is
kept and decoded range by range (``Base64Range``): a 10 MB file costs its 13.3 MB of base64 text and a few MB of
buffers, never another whole copy (``make bench`` measures it).

Sizes: one ``POST …/attachments`` for a file under 3 MB, the strictest reading of "under 3 MB" (a Graph request is
at most 4 MB, and base64 plus JSON take the rest); an upload session for 3 MB and more, sent in ranges of
3,932,160 bytes (under "4 MB" in any reading, and a multiple of 320 KiB) (CONTRACT.md section 5). Before anything
reaches Graph, a 413 naming the limit when:
- the whole message (body and attachments) is over the tenant's message size limit (``MAX_MESSAGE_BYTES``),
  counted as Exchange counts it, encoded (CONTRACT.md section 5: base64, ``encoded_size``), so a file of 30 MB
  raw is over a 35 MB limit here rather than refused by Exchange after 30 MB were uploaded;
- what one send uploads is more than Outlook's upload throttle lets through in its window (150 MB per 5 minutes
  per app and mailbox, CONTRACT.md section 8): such a message could never finish, every retry uploading again.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from sync_core.results import BadRequest, Problem
from sync_core.send_request import SendRequest

POST_LIMIT = 3_000_000  # bytes: under it one POST, from it on an upload session
RANGE_BYTES = 12 * 320 * 1024  # 3,932,160 bytes per upload-session PUT
# "a 4MB limit on the size of a request" (CONTRACT.md section 5) is 4 MiB: the largest file one POST attached,
# 3,145,611 bytes, is 4,194,148 characters of base64, and with its JSON around it a request of 4 MiB
# (4,194,304 bytes). Its refusal is 400 "Maximum request length exceeded.", ASP.NET's maxRequestLength (4096 KB).
GRAPH_REQUEST_LIMIT = 4 * 1024 * 1024
# Outlook's upload throttle: "150 MB upload (PATCH/POST/PUT) per 5 minutes" per app and mailbox (CONTRACT.md
# section 8), read strictly (10^6 bytes to the MB).
UPLOAD_WINDOW_BYTES = 150_000_000
REQUEST_ENVELOPE = 4096  # bytes of JSON around a body or an attachment's base64 (names, recipients, types), at most
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


def encoded_size(raw_bytes: int) -> int:
    """``raw_bytes`` as MIME carries them, base64 in lines of 76 characters ending in CRLF (RFC 2045 section 6.8):
    the size Exchange counts against the message size limit (CONTRACT.md section 5), about 1.37 times the bytes."""
    base64_chars = (raw_bytes + 2) // 3 * 4
    return base64_chars + 2 * ((base64_chars + 75) // 76)


def sent_body(request: SendRequest) -> tuple[str, str]:
    """The body that goes to Graph and the field it came from: ``html`` when given, else ``text``."""
    return ("html", request.html) if request.html is not None else ("text", request.text or "")


def outgoing_attachments(
    request: SendRequest, max_message_bytes: int, upload_window: int = UPLOAD_WINDOW_BYTES
) -> list[OutgoingAttachment]:
    """The request's attachments, checked before anything reaches Graph: valid base64 (400 naming the field), the
    whole message within the tenant's limit as Exchange counts it (413 naming the limit and every file's size),
    and all it uploads within Outlook's upload throttle (413 naming the throttle)."""
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
    _, content = sent_body(request)
    body = len(content.encode())
    total = encoded_size(body) + sum(encoded_size(a.size) for a in out)
    if total > max_message_bytes:
        files = ", ".join(f"'{a.name}' {a.size} bytes" for a in out) or "no attachments"
        raise PayloadTooLarge(
            f"the message is {total} bytes as Exchange counts it, encoded ({files}, body {body} bytes; base64 "
            f"adds about 37%); the limit is {max_message_bytes} bytes ({mebibytes(max_message_bytes)}, the "
            "mailbox's message size limit, MAX_MESSAGE_BYTES)",
            fields=[{"field": "attachments", "limit": str(max_message_bytes), "size": str(total)}],
        )
    uploaded = len(json.dumps(content)) + REQUEST_ENVELOPE + sum(_uploaded(a) for a in out)
    if uploaded > upload_window:
        raise PayloadTooLarge(
            f"sending this message uploads {uploaded} bytes to Outlook, more than its upload throttle lets through "
            f"({upload_window} bytes per 5 minutes per mailbox): it could never finish",
            fields=[{"field": "attachments", "limit": str(upload_window), "size": str(uploaded)}],
        )
    return out


def _uploaded(attachment: OutgoingAttachment) -> int:
    """The bytes sending ``attachment`` uploads: its base64 in a POST, or its bytes through an upload session."""
    raw = attachment.size if attachment.needs_upload_session else len(attachment.base64_text)
    return raw + REQUEST_ENVELOPE
