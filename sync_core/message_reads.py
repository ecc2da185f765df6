"""What the inbound worker reads of a message at Graph, and no more: the message, the threading headers of its
MIME, its attachments' bytes up to the cap.

Downloads are streamed (``GraphClient.streamed``: the mailbox's in-flight slot is held until the body is read) and
handed on chunk by chunk as they arrive, never gathered: an attachment's bytes go to their blob block by block
(``MessageStore.attachment_writer``). Reading stops as soon as it says enough: a MIME message at the end of its
headers; an attachment a little past the cap (R9: over it, whatever follows), so that a file just over the cap is
measured to its last byte, while none of its bytes past the cap are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests

from sync_core.adapters.graph import GraphClient
from sync_core.content_ids import message_with_content_ids
from sync_core.matching import SIZE_OVERHEAD_ALLOWANCE, AttachmentMeta
from sync_core.mime_headers import header_section, threading_ids

# requests' own read size for a whole body (``requests.models.CONTENT_CHUNK_SIZE``); larger reads were measured to
# raise the worker's peak memory (make bench), not to save time.
CHUNK_BYTES = 10 * 1024
# How far past the cap an attachment is still read (and counted, not kept) to tell the user its size: as far as
# Graph's size may overstate a file near the cap (matching), so a file decided on its bytes is measured whole.
MEASURE_PAST_CAP = SIZE_OVERHEAD_ALLOWANCE


@dataclass(frozen=True)
class Measured:
    """How many bytes an attachment's ``$value`` had: all of them (``complete``), or at least that many."""

    size: int
    complete: bool


def message_json(graph: GraphClient, base: str, cap: int) -> object:
    """One GET: what sync needs, headers included, and the attachments' metadata without their bytes (inline ones
    with their contentId, however Graph takes it: ``content_ids``)."""
    return message_with_content_ids(graph, base, cap)


def _chunks(response: requests.Response) -> Iterator[bytes]:
    yield from response.iter_content(CHUNK_BYTES)


def mime_threading_ids(graph: GraphClient, base: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """In-Reply-To and References from the message's MIME (``$value``, CONTRACT.md section 4): only its headers
    are read; the connection is closed before the body."""
    with graph.streamed(f"{base}/$value") as response:
        return threading_ids(header_section(_chunks(response)))


def stream_bytes(graph: GraphClient, path: str, keep: int, write: Callable[[bytes], None]) -> Measured:
    """The bytes at ``path``, handed to ``write`` as they arrive while there are at most ``keep`` of them; past
    that, counted (not kept) up to ``keep + MEASURE_PAST_CAP``, then the connection is closed."""
    size = 0
    with graph.streamed(path) as response:
        for chunk in _chunks(response):
            size += len(chunk)
            if size <= keep:
                write(chunk)
            elif size > keep + MEASURE_PAST_CAP:
                return Measured(size, complete=False)
    return Measured(size, complete=True)


def attachment_path(base: str, attachment: AttachmentMeta) -> str:
    return f"{base}/attachments/{attachment.attachment_id}"


def reference_link(graph: GraphClient, base: str, attachment: AttachmentMeta) -> str:
    """A reference attachment's link: its ``$value`` is a 405 (CONTRACT.md section 5)."""
    return str(graph.get_json(attachment_path(base, attachment)).get("sourceUrl") or "")


def attachment_bytes(
    graph: GraphClient, base: str, attachment: AttachmentMeta, cap: int, write: Callable[[bytes], None]
) -> Measured:
    """A file or item attachment's ``$value``, streamed to ``write`` up to ``cap`` bytes; over the cap when the
    measured size is (R9)."""
    return stream_bytes(graph, f"{attachment_path(base, attachment)}/$value", cap, write)
