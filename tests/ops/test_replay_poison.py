"""``replay-poison`` against Azurite when things go wrong half-way: nothing the service gave up on is lost.

- a send that fails after some packs went out leaves every reference either back on its queue or still in the
  Failures table (never deleted with its row while part of it was unsent);
- an inbound pack too long for one table property is recorded by the poison consumer in rows that fit, so the
  whole pack can be replayed;
- the poison queue is moved once: what fails again while a replay runs stays for the next one; a message whose
  send failed is visible again at once; a message is never sent after its lease ran out (someone else may hold it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.queue import QueueClient

from sync_core import names, workers
from sync_core.adapters.ops_store import MAX_TEXT, FailureStore
from sync_core.adapters.storage import StorageClients
from sync_core.clock import FixedClock
from sync_core.ops import replay
from sync_core.ops.cli import main
from sync_core.webhook import MAX_PACKED_BYTES, pack

Env = tuple[dict[str, str], StorageClients]
NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
POISON = names.QUEUE_INBOUND + names.POISON_SUFFIX


def ref(n: int) -> dict[str, str]:
    # Long ids, as Graph's are (about 150 characters): 100 of them are a 21,000-character Failures row.
    return {"user_id": "teacher-1", "connection_id": "c-active", "message_id": f"AAMkAD{n:06d}" + "x" * 140}


def run(capsys: pytest.CaptureFixture[str], environ: dict[str, str], *argv: str) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    code = main(["--json", *argv], environ=environ)
    captured = capsys.readouterr()
    return code, dict(json.loads(captured.out)), captured.err


def queued_refs(storage: StorageClients, queue: str) -> list[str]:
    """Message ids of every pack on the queue (as the Functions trigger reads them: base64 text)."""
    raw = storage.queues.get_queue_client(queue)
    ids: list[str] = []
    for message in raw.receive_messages(max_messages=32, visibility_timeout=1):
        ids.extend(r["message_id"] for r in json.loads(base64.b64decode(message.content))["refs"])
    return ids


def recorded_refs(failures: FailureStore) -> list[str]:
    ids: list[str] = []
    for page in failures.pages(names.QUEUE_INBOUND):
        for row in page:
            data = json.loads(row.message)
            ids.extend(r["message_id"] for r in data["refs"]) if "refs" in data else ids.append(data["message_id"])
    return ids


def failing_on(calls: set[int]) -> Callable[..., Any]:
    """``QueueClient.send_message`` that raises on the given calls (1-based) and sends the others."""
    real = QueueClient.send_message
    count = 0

    def send(self: QueueClient, *args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count in calls:
            raise ServiceRequestError("storage unreachable")
        return real(self, *args, **kwargs)

    return send


def test_a_send_failing_half_way_loses_no_reference(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    failures = FailureStore(storage.tables)
    everything = [ref(n)["message_id"] for n in range(200)]
    for start in (0, 100):  # two packs the worker gave up on, 100 references each
        given_up = json.dumps({"refs": [ref(n) for n in range(start, start + 100)], "attempt": 4})
        assert len(given_up) < MAX_TEXT < MAX_PACKED_BYTES < 2 * len(given_up)  # each row whole; both: over a pack
        failures.record(names.QUEUE_INBOUND, given_up, NOW, "transient: gave up after 5 attempts")

    monkeypatch.setattr(QueueClient, "send_message", failing_on({2}))
    code, report, _ = run(capsys, environ, "replay-poison", names.QUEUE_INBOUND)
    monkeypatch.undo()

    assert code == 1 and "storage unreachable" in report["error"]
    on_queue, still_recorded = queued_refs(storage, names.QUEUE_INBOUND), recorded_refs(failures)
    assert sorted(on_queue + still_recorded) == sorted(everything)  # each one somewhere, none lost
    assert report["rows_replayed"] + len(still_recorded) // 100 == 2

    # Run again once storage is back: the rest goes, and the table is empty.
    code, report, _ = run(capsys, environ, "replay-poison", names.QUEUE_INBOUND)
    assert (code, report["error"]) == (0, "")
    assert recorded_refs(failures) == []
    assert set(on_queue + queued_refs(storage, names.QUEUE_INBOUND)) == set(everything)


@dataclass
class Ports:
    """What the poison consumer uses of the app's services: storage and a clock."""

    storage: StorageClients
    clock: FixedClock


def test_a_poisoned_pack_over_a_table_property_is_recorded_whole_and_replayed_whole(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    # As the webhook packs a burst of notifications: up to 40 KiB of references in one queue message.
    [packed] = pack([ref(n) for n in range(150)])
    assert MAX_TEXT < len(packed) <= MAX_PACKED_BYTES
    failures = FailureStore(storage.tables)
    failures.note_error(names.QUEUE_INBOUND, packed, "transient: storage unavailable", NOW)

    workers.record_poison(names.QUEUE_INBOUND, packed, Ports(storage, FixedClock(NOW)))  # type: ignore[arg-type]

    rows = [row for page in failures.pages(names.QUEUE_INBOUND) for row in page]
    assert rows and not any(row.truncated for row in rows)
    assert {row.error for row in rows} == {"transient: storage unavailable"}
    assert sorted(recorded_refs(failures)) == sorted(ref(n)["message_id"] for n in range(150))

    code, report, _ = run(capsys, environ, "replay-poison", names.QUEUE_INBOUND)

    assert (code, report["kept"], report["error"]) == (0, {}, "")
    assert sorted(queued_refs(storage, names.QUEUE_INBOUND)) == sorted(ref(n)["message_id"] for n in range(150))
    assert recorded_refs(failures) == []


def poison_texts(storage: StorageClients) -> list[str]:
    return [m.content for m in storage.queues.get_queue_client(POISON).peek_messages(max_messages=32)]


def test_what_fails_again_while_the_replay_runs_is_left_for_the_next_one(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    poison = storage.queues.get_queue_client(POISON)
    for n in range(3):
        poison.send_message(f"pack-{n}")
    real = QueueClient.send_message
    again = 0

    def fails_again_at_once(self: QueueClient, content: Any, **kwargs: Any) -> Any:
        """Every message sent back is poisoned again before the replay ends (the fix did not work)."""
        nonlocal again
        sent = real(self, content, **kwargs)
        if self.queue_name == names.QUEUE_INBOUND and again < 20:  # a bound, so the old unbounded loop ends too
            again += 1
            real(poison, f"again-{content}")
        return sent

    monkeypatch.setattr(QueueClient, "send_message", fails_again_at_once)
    code, report, _ = run(capsys, environ, "replay-poison", POISON)
    monkeypatch.undo()

    assert (code, report["from_poison_queue"]) == (0, 3)
    assert sorted(poison_texts(storage)) == ["again-pack-0", "again-pack-1", "again-pack-2"]


def test_a_message_whose_send_failed_is_visible_again_at_once(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    poison = storage.queues.get_queue_client(POISON)
    for n in range(3):
        poison.send_message(f"pack-{n}")

    monkeypatch.setattr(QueueClient, "send_message", failing_on({2}))
    code, report, _ = run(capsys, environ, "replay-poison", POISON)
    monkeypatch.undo()

    assert (code, report["from_poison_queue"]) == (1, 1)
    assert len(poison_texts(storage)) == 2  # not hidden for the lease: "run it again" finds them now

    code, report, _ = run(capsys, environ, "replay-poison", POISON)
    assert (code, report["from_poison_queue"]) == (0, 2)
    assert poison_texts(storage) == []


@pytest.fixture
def slow_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The replay's clock, advanced by each send by a third of the lease (a slow link)."""
    now = [0.0]
    monkeypatch.setattr(replay, "monotonic", lambda: now[0], raising=False)
    yield now


def test_no_message_is_sent_after_its_lease_ran_out(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, slow_clock: list[float]
) -> None:
    """Past its lease a poisoned message is visible to others (the poison consumer, another replay): sending it
    then could send it twice. The replay lets the rest of a batch go and receives it again with a new lease."""
    environ, storage = own_storage
    poison = storage.queues.get_queue_client(POISON)
    for n in range(8):
        poison.send_message(f"pack-{n}")
    leases: dict[str, float] = {}  # message text -> when its current lease ends (on the replay's clock)
    late: list[str] = []
    real_receive, real_send = QueueClient.receive_messages, QueueClient.send_message

    def receive(self: QueueClient, **kwargs: Any) -> Any:
        batch = list(real_receive(self, **kwargs))
        for message in batch:
            leases[message.content] = slow_clock[0] + kwargs["visibility_timeout"]
        return iter(batch)

    def send(self: QueueClient, content: Any, **kwargs: Any) -> Any:
        if slow_clock[0] >= leases[content]:
            late.append(content)
        slow_clock[0] += replay.LEASE_SECONDS / 3
        return real_send(self, content, **kwargs)

    monkeypatch.setattr(QueueClient, "receive_messages", receive)
    monkeypatch.setattr(QueueClient, "send_message", send)
    code, report, _ = run(capsys, environ, "replay-poison", POISON)
    monkeypatch.undo()

    assert (code, report["from_poison_queue"], late) == (0, 8, [])
    assert poison_texts(storage) == []


def test_a_delete_failing_after_its_send_leaves_the_rest_visible(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    poison = storage.queues.get_queue_client(POISON)
    for n in range(3):
        poison.send_message(f"pack-{n}")

    def unreachable(self: QueueClient, *args: Any, **kwargs: Any) -> None:
        raise ServiceRequestError("storage unreachable")

    monkeypatch.setattr(QueueClient, "delete_message", unreachable)
    code, report, _ = run(capsys, environ, "replay-poison", POISON)
    monkeypatch.undo()

    assert (code, report["from_poison_queue"]) == (1, 0)
    assert len(poison_texts(storage)) == 2  # the one sent stays leased (sent again by a next run: at least once)
