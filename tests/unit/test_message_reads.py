"""Streamed downloads hand their bytes on as they arrive and stop as soon as they say enough (R9: a file over the
cap is measured a little past it, and none of its bytes past the cap are kept)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import cast

import requests

from sync_core.adapters.graph import GraphClient
from sync_core.message_reads import CHUNK_BYTES, MEASURE_PAST_CAP, Measured, stream_bytes

CAP = 3 * 1024 * 1024


class Body(io.BytesIO):
    """A response body that remembers how much of it was read when the response was closed."""

    read_when_closed = -1

    def close(self) -> None:
        self.read_when_closed = self.tell()
        super().close()


class OneResponse:
    """Stands in for GraphClient.streamed: one 200 answer over ``data``, counting what was read of it."""

    def __init__(self, data: bytes) -> None:
        self.body = Body(data)
        self.open = False

    @contextlib.contextmanager
    def streamed(self, path: str) -> Iterator[requests.Response]:
        response = requests.Response()
        response.status_code, response.raw = 200, self.body
        self.open = True
        try:
            yield response
        finally:
            response.close()
            self.open = False


class Sink:
    """Where the kept bytes go, noting how many it held at once at most (one chunk: nothing is gathered)."""

    def __init__(self, graph: OneResponse) -> None:
        self.graph, self.parts, self.largest = graph, [], 0

    def write(self, data: bytes) -> None:
        assert self.graph.open  # written while the body is read, not after
        self.parts.append(data)
        self.largest = max(self.largest, len(data))


def fetch(data: bytes) -> tuple[Measured, Sink, OneResponse]:
    graph = OneResponse(data)
    sink = Sink(graph)
    measured = stream_bytes(cast(GraphClient, graph), "/users/u/messages/m/attachments/a/$value", CAP, sink.write)
    return measured, sink, graph


def test_a_file_of_the_cap_is_handed_on_whole_chunk_by_chunk() -> None:
    data = bytes(range(256)) * (CAP // 256)
    measured, sink, _ = fetch(data)
    assert measured == Measured(CAP, complete=True)
    assert b"".join(sink.parts) == data and sink.largest <= CHUNK_BYTES


def test_a_file_just_over_the_cap_is_measured_whole_and_none_of_it_past_the_cap_is_kept() -> None:
    measured, sink, _ = fetch(b"\x01" * (CAP + 1))
    assert measured == Measured(CAP + 1, complete=True)
    assert sum(len(p) for p in sink.parts) <= CAP


def test_a_much_larger_file_is_read_no_further_than_a_chunk_past_the_measuring_margin() -> None:
    measured, sink, graph = fetch(b"\x01" * (10 * CAP))
    assert not measured.complete and measured.size > CAP + MEASURE_PAST_CAP
    assert CAP < graph.body.read_when_closed <= CAP + MEASURE_PAST_CAP + CHUNK_BYTES
    assert sum(len(p) for p in sink.parts) <= CAP
