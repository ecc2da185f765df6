"""Streamed downloads stop as soon as they say enough (R9: cap + 1 bytes tell an attachment is over the cap)."""

from __future__ import annotations

import io
from typing import Any, cast

import requests

from sync_core.adapters.graph import GraphClient
from sync_core.message_reads import CHUNK_BYTES, download

CAP = 3 * 1024 * 1024


class Body(io.BytesIO):
    """A response body that remembers how much of it was read when the response was closed."""

    read_when_closed = -1

    def close(self) -> None:
        self.read_when_closed = self.tell()
        super().close()


class OneResponse:
    """Stands in for GraphClient.request: one streamed 200 answer over ``data``, counting what was read of it."""

    def __init__(self, data: bytes) -> None:
        self.body = Body(data)
        self.streamed: list[bool] = []

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        self.streamed.append(bool(options.get("stream")))
        response = requests.Response()
        response.status_code, response.raw = 200, self.body
        return response


def fetch(data: bytes) -> tuple[bytes | None, OneResponse]:
    graph = OneResponse(data)
    return download(cast(GraphClient, graph), "/users/u/messages/m/attachments/a/$value", CAP), graph


def test_a_file_of_the_cap_is_kept_whole() -> None:
    data = bytes(range(256)) * (CAP // 256)
    kept, graph = fetch(data)
    assert kept == data and graph.streamed == [True]


def test_a_larger_file_is_dropped_once_cap_plus_one_bytes_arrived() -> None:
    kept, graph = fetch(b"\x01" * (10 * CAP))
    assert kept is None
    assert CAP < graph.body.read_when_closed <= CAP + CHUNK_BYTES  # no further than the chunk that went over
