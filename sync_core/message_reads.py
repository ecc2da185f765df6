"""What the inbound worker reads of a message at Graph, and no more: the message, the threading headers of its
MIME, its attachments' bytes up to the cap.

Downloads are streamed (``stream=True``) and stop as soon as they say enough: an attachment at cap + 1 bytes
(R9: it is over the cap, whatever follows), a MIME message at the end of its headers. No more than the cap of an
attachment's bytes is ever kept, plus the chunk that went over it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import requests

from sync_core.adapters.graph import GraphClient
from sync_core.content_ids import message_with_content_ids
from sync_core.matching import AttachmentMeta
from sync_core.mime_headers import header_section, threading_ids

# requests' own read size for a whole body (``requests.models.CONTENT_CHUNK_SIZE``); larger reads were measured to
# raise the worker's peak memory (make bench), not to save time.
CHUNK_BYTES = 10 * 1024


def message_json(graph: GraphClient, base: str, cap: int) -> object:
    """One GET: what sync needs, headers included, and the attachments' metadata without their bytes (inline ones
    with their contentId, however Graph takes it: ``content_ids``)."""
    return message_with_content_ids(graph, base, cap)


def _chunks(response: requests.Response) -> Iterator[bytes]:
    yield from response.iter_content(CHUNK_BYTES)


def mime_threading_ids(graph: GraphClient, base: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """In-Reply-To and References from the message's MIME (``$value``, CONTRACT.md section 4): only its headers
    are read; the connection is closed before the body."""
    with contextlib.closing(graph.request("GET", f"{base}/$value", stream=True)) as response:
        return threading_ids(header_section(_chunks(response)))


def download(graph: GraphClient, path: str, limit: int) -> bytes | None:
    """The bytes at ``path``, or None as soon as there are more than ``limit`` of them (never kept)."""
    chunks: list[bytes] = []
    size = 0
    with contextlib.closing(graph.request("GET", path, stream=True)) as response:
        for chunk in _chunks(response):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def attachment_content(graph: GraphClient, base: str, attachment: AttachmentMeta, cap: int) -> bytes | str | None:
    """A file or item attachment's bytes (``$value``), None when they are over ``cap``; a reference attachment's
    link (its ``$value`` is a 405, CONTRACT.md section 5)."""
    path = f"{base}/attachments/{attachment.attachment_id}"
    if attachment.kind == "reference":
        return str(graph.get_json(path).get("sourceUrl") or "")
    return download(graph, f"{path}/$value", cap)
