"""Where the queue workers and the correlation id meet (issue 14's telemetry with issue 11's concurrent packs):
each reference of a pack syncs in its own notification's trace, a sent-back lifecycle event keeps its path's id,
and a throttled message is a wait, not a failed sync, in the metrics and the trace."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest

from sync_core import inbound, telemetry, upkeep, workers
from sync_core.adapters.graph import GraphUnavailable
from sync_core.clock import FixedClock
from sync_core.failures import Transient
from sync_core.inbound import MessageRef, Outcome, Result

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
A, B = "a" * 32, "b" * 32


class _Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_message(self, content: str, visibility_timeout: int | None = None, **_: Any) -> None:
        self.sent.append(content)


class _Storage:
    def __init__(self) -> None:
        self.queue_ = _Queue()

    def queue(self, name: str) -> _Queue:
        return self.queue_


class _Services:
    def __init__(self) -> None:
        self.storage = _Storage()
        self.clock = FixedClock(NOW)


def test_each_reference_of_a_pack_syncs_in_its_own_notifications_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str | None] = {}
    both_running = threading.Barrier(2, timeout=5)  # the two references run at the same time, in two threads

    def sync(ref: MessageRef, services: Any) -> Result:
        both_running.wait()
        seen[ref.message_id] = telemetry.correlation_id()
        return Result(Outcome.STORED)

    monkeypatch.setattr(inbound, "_sync_message", sync)
    refs = [
        {"mailbox": "t/m", "message_id": "m1", "correlation_id": A},
        {"mailbox": "t/m", "message_id": "m2", "correlation_id": B},
    ]
    workers.sync_pack(json.dumps({"refs": refs}), _Services())  # type: ignore[arg-type]
    assert seen == {"m1": A, "m2": B}


def test_a_lifecycle_event_sent_back_after_a_passing_failure_keeps_its_correlation_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable(raw: str, services: Any) -> Any:
        raise Transient("Graph unavailable (503)", retry_after=5.0)

    monkeypatch.setattr(upkeep, "handle_lifecycle", unavailable)
    services = _Services()
    body = json.dumps({"subscription_id": "s1", "event": "missed", "correlation_id": A})
    workers.run_lifecycle(body, services)  # type: ignore[arg-type]
    [again] = services.storage.queue_.sent
    assert telemetry.carried(again) == A
    assert json.loads(again)["attempt"] == 1


def test_a_throttled_message_counts_as_throttled_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[dict[str, str]] = []

    def throttled(ref: MessageRef, services: Any) -> Result:
        raise GraphUnavailable(429, "TooManyRequests", "Graph throttles this mailbox", retry_after=30.0)

    monkeypatch.setattr(inbound, "_sync_message", throttled)
    monkeypatch.setattr(telemetry.messages, "add", lambda n, attributes: counted.append(attributes))
    report = workers.sync_pack(
        json.dumps({"refs": [{"mailbox": "t/m", "message_id": "m1"}]}),
        _Services(),  # type: ignore[arg-type]
    )
    assert report.throttled == 1
    assert [c["outcome"] for c in counted] == ["throttled"]
