"""A pack holds back only the mailbox Graph throttled: its other mailboxes' references still sync in the same run.

Notification references name their mailbox (one subscription per mailbox) and no connection; the hold-back must be
per mailbox, or one throttled mailbox would send every notification reference of the pack back to wait.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest

from sync_core import workers
from sync_core.clock import FixedClock
from sync_core.failures import Transient
from sync_core.inbound import MessageRef, Outcome, Result

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


class _Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    def send_message(self, content: str, visibility_timeout: int | None = None) -> None:
        self.sent.append((content, visibility_timeout))


class _Storage:
    def __init__(self) -> None:
        self.inbound = _Queue()

    def queue(self, name: str) -> _Queue:
        return self.inbound


class _Services:
    def __init__(self) -> None:
        self.storage = _Storage()
        self.clock = FixedClock(NOW)


def test_a_throttled_mailbox_holds_back_its_own_references_only(monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    lock = threading.Lock()
    first_throttle = threading.Event()

    def sync_message(ref: MessageRef, services: Any) -> Result:
        if ref.mailbox == "tenant/busy":
            first_throttle.set()
            raise Transient("Graph unavailable (429 TooManyRequests)", retry_after=30.0, throttled=True)
        first_throttle.wait(5)  # the busy mailbox's 429 comes first, as it would when its slot answered first
        with lock:
            synced.append(ref.message_id)
        return Result(Outcome.STORED)

    monkeypatch.setattr(workers, "sync_message", sync_message)
    monkeypatch.setattr(workers, "PACK_CONCURRENCY", 1)  # one at a time: the busy mailbox's first reference first
    refs = [{"mailbox": "tenant/busy", "message_id": f"busy-{n}"} for n in range(3)]
    refs += [{"mailbox": "tenant/quiet", "message_id": f"quiet-{n}"} for n in range(3)]
    services = _Services()

    report = workers.sync_pack(json.dumps({"refs": refs}), services)  # type: ignore[arg-type]

    assert sorted(synced) == ["quiet-0", "quiet-1", "quiet-2"]
    assert report.throttled == 3
    (content, delay), *rest = services.storage.inbound.sent
    assert not rest and delay is not None and delay >= 30
    assert [ref["message_id"] for ref in json.loads(content)["refs"]] == ["busy-0", "busy-1", "busy-2"]


def test_each_throttled_mailbox_waits_its_own_retry_after_not_the_longest_of_the_pack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Graph asks one mailbox to wait 300 s and another 2 s: the second's references come back in about 2 s."""
    waits = {"tenant/slow": 300.0, "tenant/soon": 2.0}

    def sync_message(ref: MessageRef, services: Any) -> Result:
        raise Transient("Graph unavailable (429 TooManyRequests)", retry_after=waits[ref.mailbox], throttled=True)

    monkeypatch.setattr(workers, "sync_message", sync_message)
    monkeypatch.setattr(workers, "THROTTLE_JITTER_SECONDS", 0.5)
    refs = [{"mailbox": mailbox, "message_id": f"{mailbox}-{n}"} for mailbox in waits for n in range(2)]
    services = _Services()

    report = workers.sync_pack(json.dumps({"refs": refs}), services)  # type: ignore[arg-type]

    assert report.throttled == 4
    delays = {json.loads(content)["refs"][0]["mailbox"]: delay for content, delay in services.storage.inbound.sent}
    assert delays["tenant/slow"] is not None and delays["tenant/slow"] >= 300
    assert delays["tenant/soon"] is not None and 2 <= delays["tenant/soon"] <= 3


def test_a_reference_graph_throttles_for_a_day_is_recorded_for_operators_not_re_queued_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reference throttled for the first time carries when; one still throttled a day later goes to the Failures
    table (the line operators are alerted on; replay-poison sends it back, its day counted afresh)."""

    def sync_message(ref: MessageRef, services: Any) -> Result:
        raise Transient("Graph unavailable (429 TooManyRequests)", retry_after=60.0, throttled=True)

    recorded: list[tuple[str, str]] = []
    monkeypatch.setattr(workers, "sync_message", sync_message)
    monkeypatch.setattr(workers, "record", lambda queue, body, failure, services: recorded.append((body, str(failure))))
    services = _Services()
    day_ago = NOW.timestamp() - 24 * 3600
    refs = [{"mailbox": "tenant/box", "message_id": "new"}]
    refs += [{"mailbox": "tenant/box", "message_id": "old", "throttled_since": day_ago}]

    report = workers.sync_pack(json.dumps({"refs": refs}), services)  # type: ignore[arg-type]

    [(content, _)] = services.storage.inbound.sent
    [waiting] = json.loads(content)["refs"]
    assert (waiting["message_id"], waiting["throttled_since"]) == ("new", NOW.timestamp())
    [(body, failure)] = recorded
    assert json.loads(body) == {"mailbox": "tenant/box", "message_id": "old"}
    assert "throttling its mailbox for 24 hours" in failure
    assert report.throttled == 1 and len(report.recorded) == 1
