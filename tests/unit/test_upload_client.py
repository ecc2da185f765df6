"""The upload-session client's rules (CONTRACT.md section 5), driven by a scripted transport (no network): no bearer
token ever, ranges in order with their Content-Range, refusals retried, a lost answer retried safely, anything
else ends the upload at the byte it stopped at. And the base64 reader that feeds it, range by range."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
import requests

from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, StaticToken
from sync_core.adapters.upload import UploadClient, UploadInterrupted
from sync_core.send_attachments import Base64Range
from tests.unit.test_graph_client import BASE, Clock, Scripted, fake_time, gate

URL = "https://outlook.example/api/v2.0/Users('u@t')/Messages('m')/AttachmentSessions('s')?authtoken=abc"
DATA = hashlib.shake_256(b"schedule").digest(10_000)
TEXT = base64.b64encode(DATA).decode()


def uploader(
    script: list[tuple[int, dict[str, str], Any]], budget: float = 20.0
) -> tuple[UploadClient, Scripted, Clock]:
    adapter, clock = Scripted(script), Clock()
    session = requests.Session()
    session.mount("https://", adapter)
    return UploadClient(session, mailbox="m1", retry=fake_time(clock, budget), gate=gate()), adapter, clock


def opener(start: int, end: int) -> Base64Range:
    return Base64Range(TEXT, start, end)


def sent_bytes(request: requests.PreparedRequest) -> bytes:
    body = request.body
    assert body is not None and hasattr(body, "read")  # streamed, with a Content-Length
    return bytes(body.read())


def next_range(n: int) -> tuple[int, dict[str, str], Any]:
    return (200, {}, {"nextExpectedRanges": [str(n)]})


def test_ranges_go_in_order_with_content_range_and_never_a_bearer_token() -> None:
    client, adapter, _ = uploader([next_range(4000), next_range(8000), (201, {"Location": "x"}, None)])
    client.upload(URL, len(DATA), opener, 4000)
    assert [r.headers["Content-Range"] for r in adapter.sent] == [
        "bytes 0-3999/10000",
        "bytes 4000-7999/10000",
        "bytes 8000-9999/10000",
    ]
    assert all("Authorization" not in r.headers for r in adapter.sent)
    assert [r.headers["Content-Length"] for r in adapter.sent] == ["4000", "4000", "2000"]
    assert b"".join(sent_bytes(r) for r in adapter.sent) == DATA


def test_a_refused_range_is_sent_again_after_retry_after() -> None:
    busy = {"error": {"code": "serviceNotAvailable", "message": "busy"}}
    client, adapter, clock = uploader([(503, {"Retry-After": "1.5"}, busy), (201, {}, None)])
    client.upload(URL, len(DATA), opener, 10_000)
    assert clock.sleeps == [1.5]
    assert [sent_bytes(r) for r in adapter.sent] == [DATA, DATA]  # each attempt reads the range afresh


OUT_OF_ORDER = {"error": {"code": "InvalidRange", "message": "The next expected range starts at byte 4000"}}
GONE = {"error": {"code": "ErrorItemNotFound", "message": "The upload session was not found"}}


@pytest.mark.parametrize(
    ("lost", "refusal"),
    [
        ((504, {}, None), (416, {}, OUT_OF_ORDER)),  # the range was stored, its answer lost
        ((0, {}, requests.ConnectionError("reset")), (416, {}, OUT_OF_ORDER)),
        ((0, {}, requests.Timeout("read timed out")), (404, {}, GONE)),  # the last range: the session finished
    ],
    ids=["504 then 416", "reset then 416", "timeout then 404"],
)
def test_a_refusal_right_after_a_lost_answer_ends_the_upload_as_transient(lost: Any, refusal: Any) -> None:
    # The range was probably stored: not a broken upload for good but one to start again (CONTRACT.md section 5).
    client, adapter, _ = uploader([lost, refusal])
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 4000)
    assert len(adapter.sent) == 2 and stopped.value.offset == 0
    cause = stopped.value.cause
    assert isinstance(cause, GraphUnavailable) and cause.ambiguous and cause.retry_after >= 1
    assert cause.status == refusal[0] and "may have been stored" in cause.message


@pytest.mark.parametrize("refusal", [(416, {}, OUT_OF_ORDER), (404, {}, GONE)], ids=["416", "404"])
def test_the_same_refusal_without_a_lost_answer_ends_the_upload_for_good(refusal: Any) -> None:
    client, _, _ = uploader([refusal])
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 4000)
    assert stopped.value.cause.status == refusal[0]
    assert not isinstance(stopped.value.cause, GraphUnavailable)


def test_a_redirect_is_not_followed_with_a_range_already_read() -> None:
    client, adapter, _ = uploader([(307, {"Location": URL + "&moved=1"}, None), (201, {}, None)])
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 10_000)
    assert len(adapter.sent) == 1 and stopped.value.cause.status == 307


def test_throttling_past_the_budget_stops_with_a_transient_cause() -> None:
    throttled = {"error": {"code": "TooManyRequests", "message": "later"}}
    client, _, _ = uploader([next_range(4000), *[(429, {"Retry-After": "2"}, throttled)] * 3], budget=5)
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 4000)
    assert stopped.value.offset == 4000
    assert isinstance(stopped.value.cause, GraphUnavailable) and stopped.value.cause.retry_after >= 1


def test_an_expired_session_ends_the_upload_at_once() -> None:
    expired = {"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}
    client, adapter, clock = uploader([(401, {}, expired)])
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 4000)
    assert (stopped.value.cause.status, len(adapter.sent), clock.sleeps) == (401, 1, [])


def test_an_answer_expecting_another_byte_is_a_broken_session() -> None:
    client, _, _ = uploader([next_range(3000)])
    with pytest.raises(UploadInterrupted) as stopped:
        client.upload(URL, len(DATA), opener, 4000)
    assert stopped.value.cause.code == "unexpectedRange"


def test_a_plain_http_upload_url_is_refused_before_anything_is_sent() -> None:
    client, adapter, _ = uploader([])
    with pytest.raises(UploadInterrupted):
        client.upload(URL.replace("https://", "http://"), len(DATA), opener, 4000)
    assert adapter.sent == []


def test_the_graph_client_never_sends_its_token_to_an_upload_url() -> None:
    adapter = Scripted([])
    session = requests.Session()
    session.mount("https://", adapter)
    graph = GraphClient(BASE, StaticToken("tok"), mailbox="m1", session=session)
    with pytest.raises(GraphError) as refused:
        graph.request("PUT", URL)
    assert refused.value.code == "foreignUrl"
    assert adapter.sent == []


@pytest.mark.parametrize(
    ("start", "end"), [(0, 10_000), (0, 1), (1, 2), (2, 5), (4095, 9001), (9999, 10_000), (3000, 3000)]
)
def test_a_base64_range_reads_exactly_the_decoded_bytes(start: int, end: int) -> None:
    reader = Base64Range(TEXT, start, end)
    assert len(reader) == end - start
    pieces = []
    while chunk := reader.read(777):
        pieces.append(chunk)
    assert b"".join(pieces) == DATA[start:end]
    assert len(reader) == 0


def test_a_base64_range_reads_across_decode_blocks() -> None:
    big = hashlib.shake_256(b"big").digest(200_001)
    text = base64.b64encode(big).decode()
    assert Base64Range(text, 1, 200_000).read() == big[1:200_000]
    assert b"".join(Base64Range(text, 70_000, 150_000)) == big[70_000:150_000]
