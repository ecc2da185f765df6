"""The Graph client's retry rules, driven by a scripted transport (no network): what callers observe."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from requests.adapters import BaseAdapter

from sync_core.adapters.graph import (
    GraphClient,
    GraphError,
    GraphUnavailable,
    RetryPolicy,
    StaticToken,
    parse_retry_after,
)
from sync_core.adapters.mailbox_gate import MAX_CONCURRENT_PER_MAILBOX, MailboxGate, ProcessSlots, SlotTimeout
from tests.metrics import delta, totals

BASE = "https://graph.example/v1.0"


Script = list[tuple[int, Mapping[str, str], Any]]


class Scripted(BaseAdapter):
    """Answers each request with the next (status, headers, body) and records what was sent."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = list(script)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        status, headers, body = self.script.pop(0)
        if isinstance(body, Exception):
            raise body
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = json.dumps(body).encode() if body is not None else b""
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(
    script: list[tuple[int, Mapping[str, str], Any]], budget: float = 20.0
) -> tuple[GraphClient, Scripted, Clock]:
    adapter, clock = Scripted(script), Clock()
    session = requests.Session()
    session.mount("https://", adapter)
    policy = fake_time(clock, budget)
    return (
        GraphClient(BASE, StaticToken("tok"), mailbox="m1", session=session, retry=policy, gate=gate()),
        adapter,
        clock,
    )


def fake_time(clock: Clock, budget: float = 20.0) -> RetryPolicy:
    """The client's time is the fake clock's: sleeping moves it on, and a throttle deadline is read from it."""
    return RetryPolicy(
        budget_seconds=budget,
        sleep=clock.sleep,
        monotonic=lambda: clock.now,
        jitter=lambda: 1.0,
        wall=lambda: clock.now,
    )


def gate() -> MailboxGate:
    """A gate of the test's own: nothing it learns (a throttle) reaches another test."""
    return MailboxGate(ProcessSlots())


THROTTLED = {"error": {"code": "TooManyRequests", "message": "Please retry again later."}}


def test_429_waits_the_fractional_retry_after_then_succeeds() -> None:
    graph, adapter, clock = client([(429, {"Retry-After": "2.128"}, THROTTLED), (200, {}, {"id": "x"})])
    assert graph.get_json("/me") == {"id": "x"}
    assert clock.sleeps == [pytest.approx(2.128 * 1.1)]  # the Retry-After, and a tenth more at most (spread)
    assert len(adapter.sent) == 2


def test_each_429_counts_in_the_throttling_metric(metric_reader: InMemoryMetricReader) -> None:
    graph, _, _ = client([(429, {"Retry-After": "1"}, THROTTLED)] * 2 + [(200, {}, {"id": "x"})])
    before = totals(metric_reader)
    assert graph.get_json("/me") == {"id": "x"}
    assert delta(before, totals(metric_reader)) == {"sync.graph.throttled": {(): 2}}


def test_a_request_made_in_an_operation_carries_its_correlation_id_as_client_request_id() -> None:
    from sync_core import telemetry

    graph, adapter, _ = client([(200, {}, {}), (200, {}, {})])
    with telemetry.operation("sync message", "0af7651916cd43dd8448eb211c80319c"):
        graph.get_json("/me")
    graph.get_json("/me")  # outside any operation: none
    assert adapter.sent[0].headers["client-request-id"] == "0af76519-16cd-43dd-8448-eb211c80319c"
    assert "client-request-id" not in adapter.sent[1].headers


def test_every_request_asks_for_immutable_ids_and_carries_the_token() -> None:
    graph, adapter, _ = client([(200, {}, {})])
    graph.request("GET", "/me/messages/abc", prefer=('outlook.body-content-type="text"',))
    sent = adapter.sent[0]
    assert sent.headers["Prefer"] == 'IdType="ImmutableId", outlook.body-content-type="text"'
    assert sent.headers["Authorization"] == "Bearer tok"


def test_503_without_retry_after_backs_off_exponentially() -> None:
    unavailable = {"error": {"code": "serviceNotAvailable", "message": "x"}}
    graph, _, clock = client([(503, {}, unavailable), (504, {}, None), (200, {}, {"ok": True})])
    assert graph.get_json("/me") == {"ok": True}
    assert clock.sleeps == [0.5, 1.0]


def test_past_the_budget_the_caller_gets_graph_unavailable_with_a_wait() -> None:
    graph, _, _ = client([(429, {"Retry-After": "3"}, THROTTLED)] * 10, budget=5.0)
    with pytest.raises(GraphUnavailable) as caught:
        graph.get_json("/me")
    assert caught.value.status == 429
    assert caught.value.code == "TooManyRequests"
    assert caught.value.retry_after == 3.0


def test_a_4xx_is_not_retried_and_carries_graphs_error_code() -> None:
    missing = {"error": {"code": "ErrorItemNotFound", "message": "The specified object was not found in the store."}}
    graph, adapter, _ = client([(404, {}, missing)])
    with pytest.raises(GraphError) as caught:
        graph.get_json("/me/messages/gone")
    assert (caught.value.status, caught.value.code) == (404, "ErrorItemNotFound")
    assert len(adapter.sent) == 1


def test_connection_errors_are_retried() -> None:
    graph, _, clock = client([(0, {}, requests.ConnectionError("reset")), (200, {}, {"ok": 1})])
    assert graph.get_json("/me") == {"ok": 1}
    assert clock.sleeps == [0.5]


def test_next_links_are_followed_as_given_but_never_to_another_host() -> None:
    page1 = {"value": [1], "@odata.nextLink": f"{BASE}/me/mailFolders/inbox/messages/delta?$skiptoken=a"}
    page2 = {"value": [2], "@odata.deltaLink": f"{BASE}/me/mailFolders/inbox/messages/delta?$deltatoken=b"}
    graph, adapter, _ = client([(200, {}, page1), (200, {}, page2)])
    assert [p["value"] for p in graph.pages("/me/mailFolders/inbox/messages/delta")] == [[1], [2]]
    assert str(adapter.sent[1].url).endswith("/me/mailFolders/inbox/messages/delta?$skiptoken=a")
    with pytest.raises(GraphError, match="refusing to send a token"):
        graph.get_json("https://evil.example/v1.0/me")


@pytest.mark.parametrize(("value", "seconds"), [("2.128", 2.128), ("0", 0.0), (None, None), ("soon", None)])
def test_retry_after_parsing(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_a_401_forces_one_token_refresh_then_gives_up() -> None:
    refreshes: list[bool] = []

    def token(force_refresh: bool = False) -> str:
        refreshes.append(force_refresh)
        return "fresh" if force_refresh else "stale"

    expired = {"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired."}}
    graph, adapter, _ = client([(401, {}, expired), (200, {}, {"id": "me"})])
    graph._token = token
    assert graph.get_json("/me") == {"id": "me"}
    assert refreshes == [False, True]
    assert [r.headers["Authorization"] for r in adapter.sent] == ["Bearer stale", "Bearer fresh"]

    graph, adapter, _ = client([(401, {}, expired), (401, {}, expired)])
    graph._token = token
    with pytest.raises(GraphError) as caught:
        graph.get_json("/me")
    assert caught.value.status == 401
    assert len(adapter.sent) == 2


def free_slots(graph: GraphClient) -> int:
    """How many more requests to the client's mailbox could start now (taken and given back again)."""
    taken = []
    with contextlib.suppress(SlotTimeout):
        while len(taken) <= MAX_CONCURRENT_PER_MAILBOX:
            taken.append(graph.gate.enter(graph.mailbox, timeout=0.0))
    for held in taken:
        graph.gate.leave(held)
    return len(taken)


def test_a_streamed_body_holds_its_mailbox_slot_until_it_is_read() -> None:
    """CONTRACT.md section 8: 4 concurrent requests per mailbox; a large $value counts while its body arrives."""
    adapter = Scripted([(200, {}, "bytes"), (200, {}, {"id": "x"})])
    session = requests.Session()
    session.mount("https://", adapter)
    graph = GraphClient(BASE, StaticToken("tok"), mailbox="streaming-box", session=session, gate=gate())
    with graph.streamed("/users/u/messages/m/attachments/a/$value") as response:
        assert free_slots(graph) == MAX_CONCURRENT_PER_MAILBOX - 1
        assert response.content == b'"bytes"'
    assert free_slots(graph) == MAX_CONCURRENT_PER_MAILBOX
    assert graph.get_json("/me") == {"id": "x"}  # and a plain request gives its slot back at once
    assert free_slots(graph) == MAX_CONCURRENT_PER_MAILBOX
