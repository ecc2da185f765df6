"""The outbox's promises, one at a time against Azurite and a local receiver (tests/integration/test_events_story.py
runs them all in the whole story): an event whose writer died after its fact is delivered by the sweeper; one whose
fact was never written is dropped, not invented; a refusal is recorded and a replay after the fix delivers it; a
receiver that stays down is retried with back-off until the horizon, then the event is refused and recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError

from devtools.azurite import Azurite
from devtools.enrollio_receiver import EnrollioReceiver, new_secret
from sync_core import delivery, events, names
from sync_core.adapters.connection_store import ConnectionStore
from sync_core.adapters.ops_store import FailureStore
from sync_core.adapters.outbox_store import OutboxStore
from sync_core.adapters.storage import ensure_storage
from sync_core.adapters.thread_store import MessageStore
from sync_core.clock import FixedClock
from sync_core.connections import Connection, Status, on_disconnected
from sync_core.matching import Direction
from sync_core.services import Services
from sync_core.threads import SkipRecord
from tests.conftest import make_settings


@dataclasses.dataclass
class Bench:
    services: Services
    clock: FixedClock
    receiver: EnrollioReceiver
    connection: Connection


@pytest.fixture
def bench(azurite: Azurite) -> Iterator[Bench]:
    secret = new_secret()
    with EnrollioReceiver(secret) as receiver:
        settings = make_settings(
            azurite.connection_string, ENROLLIO_EVENTS_URL=receiver.url, ENROLLIO_EVENTS_SECRET=secret
        )
        clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
        services = Services(settings, clock)
        ensure_storage(services.storage)
        now = clock.now()
        connection = Connection(
            user_id=f"user-{uuid.uuid4().hex[:8]}", account_id="acct-1", connection_id=uuid.uuid4().hex,
            address="someone@school.example", tenant_id="t", user_object_id="o", home_account_id="h",
            status=Status.CONNECTED, active=True, connected_at=now, updated_at=now,
        )  # fmt: skip
        yield Bench(services, clock, receiver, connection)
        # Nothing of these events may reach another test's receiver (the story's host polls the same queue).
        services.storage.queue(names.QUEUE_EVENTS).clear_messages()
        outbox = services.storage.tables.get_table_client(names.TABLE_OUTBOX)
        for row in outbox.list_entities():
            outbox.delete_entity(row["PartitionKey"], row["RowKey"])


def _skip(bench: Bench, reason: str = "attachment_too_large") -> tuple[events.Event, SkipRecord]:
    imid = f"<{uuid.uuid4().hex}@home.example>"
    c = bench.connection
    details = ({"name": "a.mp4", "cap": 3145728, "graph_size": 5000000},)
    event = events.message_skipped(c, "thread-1", imid, "inbound", reason, details, bench.clock.now())
    record = SkipRecord(
        c.user_id, "thread-1", c.connection_id, imid, Direction.INBOUND, reason, details, "", bench.clock.now()
    )
    return event, record


class Crash(Exception):
    """The writer's process dying between two storage calls."""


def _wake(event_id: str, check: bool = False) -> str:
    return json.dumps({"event_id": event_id, "check": check})


def test_a_fact_whose_writer_died_before_its_wake_up_is_delivered_by_the_sweeper(bench: Bench) -> None:
    # The fact was written 11 minutes ago: the delivery then signs with the receiver's own time (its library refuses
    # a webhook-timestamp 5 minutes away from it).
    bench.clock.advance(minutes=-11)
    event, skip = _skip(bench)
    messages = MessageStore(bench.services.storage.tables, bench.services.storage.blobs)
    with pytest.raises(Crash), events.recorded(bench.services, event):
        messages.record_skip(skip)  # the fact is written...
        raise Crash  # ...and the writer dies before it could wake the delivery

    assert delivery.sweep(bench.services) == 0  # the writer might still be running: not yet
    bench.clock.advance(minutes=11)
    assert delivery.sweep(bench.services) == 1
    assert "delivered" in delivery.deliver(_wake(event.event_id, check=True), bench.services)

    [received] = bench.receiver.received
    assert (received.webhook_id, received.type) == (event.event_id, "message.skipped")
    assert received.data["over_cap"] == [{"cap": 3145728, "graph_size": 5000000}]  # sizes, no file name
    assert OutboxStore(bench.services.storage.tables).get(event.event_id) is None


def test_an_event_whose_fact_was_never_written_is_dropped_not_delivered(bench: Bench) -> None:
    event, _ = _skip(bench)
    with pytest.raises(Crash), events.recorded(bench.services, event):
        raise Crash  # the fact's write failed: nothing happened

    bench.clock.advance(minutes=11)
    assert delivery.sweep(bench.services) == 1
    assert "dropped" in delivery.deliver(_wake(event.event_id, check=True), bench.services)
    assert bench.receiver.received == []
    assert OutboxStore(bench.services.storage.tables).get(event.event_id) is None


def test_an_event_enrollio_answers_401_while_its_secret_is_rotated_is_retried_and_delivered_unaided(
    bench: Bench,
) -> None:
    event, skip = _skip(bench)
    with events.recorded(bench.services, event):
        MessageStore(bench.services.storage.tables, bench.services.storage.blobs).record_skip(skip)
    bench.receiver.refuse_with = 401  # Enrollio's endpoint mid-rotation (or 403 stopped, 404 behind a gateway)

    assert delivery.deliver(_wake(event.event_id), bench.services).endswith("HTTP 401; attempt 2 in 10s")
    row = OutboxStore(bench.services.storage.tables).get(event.event_id)
    assert row is not None and (row.status, row.last_error) == ("pending", "HTTP 401")
    failures = [r for page in FailureStore(bench.services.storage.tables).pages(names.QUEUE_EVENTS) for r in page]
    assert not any(event.event_id in f.message for f in failures)  # nothing for an operator to replay

    bench.receiver.refuse_with = None  # the rotation is done; the next attempt (its delayed wake-up) delivers it
    bench.clock.advance(seconds=10)
    assert "delivered" in delivery.deliver(_wake(event.event_id), bench.services)
    assert [r.webhook_id for r in bench.receiver.received] == [event.event_id]


def test_a_receiver_that_stays_down_is_retried_with_back_off_then_refused_at_the_horizon(bench: Bench) -> None:
    event, skip = _skip(bench)
    with events.recorded(bench.services, event):
        MessageStore(bench.services.storage.tables, bench.services.storage.blobs).record_skip(skip)
    bench.receiver.down_for = 1_000

    first = delivery.deliver(_wake(event.event_id), bench.services)
    bench.clock.advance(hours=1)
    second = delivery.deliver(_wake(event.event_id), bench.services)
    assert first.endswith("HTTP 503; attempt 2 in 10s") and second.endswith("HTTP 503; attempt 3 in 20s")

    bench.clock.advance(days=3)
    assert "not delivered within 3 days; last: HTTP 503" in delivery.deliver(_wake(event.event_id), bench.services)
    row = OutboxStore(bench.services.storage.tables).get(event.event_id)
    assert row is not None and row.status == "refused" and row.attempts == 2
    assert bench.receiver.received == []


def test_a_disconnect_retried_after_its_writer_died_still_announces_the_disconnect(bench: Bench) -> None:
    # Enrollio's POST /api/disconnect saved the status and the process died before the wake-up; Enrollio retried: the
    # status did not change (no new event) but the row was written again, a little later.
    connections = ConnectionStore(bench.services.storage.tables)
    connections.save([bench.connection])
    bench.clock.advance(minutes=-11)
    gone = on_disconnected(bench.connection, bench.clock.now())
    event = events.connection_changed(bench.connection, gone)
    assert event is not None
    with pytest.raises(Crash), events.recorded(bench.services, event):
        connections.save([gone])
        raise Crash
    bench.clock.advance(seconds=30)
    again = on_disconnected(gone, bench.clock.now())
    assert events.connection_changed(gone, again) is None  # the same status: nothing new to announce
    connections.save([again])

    bench.clock.advance(minutes=11)
    assert delivery.sweep(bench.services) == 1
    assert "delivered" in delivery.deliver(_wake(event.event_id, check=True), bench.services)
    [received] = bench.receiver.received
    assert (received.type, received.data["status"]) == ("connection.disconnected", "disconnected")


def _queued(bench: Bench, event_id: str) -> list[str]:
    """The wake-ups of ``event_id`` visible in the events queue now (taken off it)."""
    queue = bench.services.storage.queue(names.QUEUE_EVENTS)
    found = []
    for message in queue.receive_messages(messages_per_page=32, visibility_timeout=60):
        if event_id in message.content:
            found.append(str(message.content))
            queue.delete_message(message)
    return found


def test_the_writers_late_wake_up_and_the_sweepers_make_one_chain_of_attempts_not_two(bench: Bench) -> None:
    # The writer's wake-up waits in a backlogged queue; the sweeper wakes the event too. The receiver is down.
    event, skip = _skip(bench)
    with events.recorded(bench.services, event):
        MessageStore(bench.services.storage.tables, bench.services.storage.blobs).record_skip(skip)
    [writers] = _queued(bench, event.event_id)
    bench.clock.advance(minutes=11)
    assert delivery.sweep(bench.services) == 1
    [sweepers] = _queued(bench, event.event_id)
    bench.receiver.down_for = 1_000

    first = delivery.deliver(sweepers, bench.services)
    late = delivery.deliver(writers, bench.services)
    assert first.endswith("HTTP 503; attempt 2 in 10s")
    assert "stale" in late
    assert bench.receiver.refused_as_down == 1  # one POST, one delayed wake-up: one chain
    row = OutboxStore(bench.services.storage.tables).get(event.event_id)
    assert row is not None and row.attempts == 1


def test_a_refused_event_is_not_reopened_by_a_leftover_wake_up_only_by_a_replay(bench: Bench) -> None:
    event, skip = _skip(bench)
    with events.recorded(bench.services, event):
        MessageStore(bench.services.storage.tables, bench.services.storage.blobs).record_skip(skip)
    [writers] = _queued(bench, event.event_id)
    bench.clock.advance(days=3, minutes=1)  # Enrollio never got it: refused at the horizon
    assert "not delivered within 3 days" in delivery.deliver(_wake(event.event_id), bench.services)

    leftover = delivery.deliver(writers, bench.services)  # a writer running again, a duplicate wake-up
    assert "refused; replay-poison enrollio-events" in leftover
    assert bench.receiver.received == []
    row = OutboxStore(bench.services.storage.tables).get(event.event_id)
    assert row is not None and row.status == "refused"
    failures = [r for page in FailureStore(bench.services.storage.tables).pages(names.QUEUE_EVENTS) for r in page]
    assert len([f for f in failures if event.event_id in f.message]) == 1

    bench.clock.advance(days=-3, minutes=-1)  # signed at the receiver's own time (it refuses a timestamp days away)
    replayed = next(f.message for f in failures if event.event_id in f.message)
    assert "delivered" in delivery.deliver(replayed, bench.services)
    assert "delivered already" in delivery.deliver(replayed, bench.services)
    assert [r.webhook_id for r in bench.receiver.received] == [event.event_id]


def test_a_retry_whose_wake_up_cannot_be_queued_waits_for_the_sweeper_not_the_hosts_quick_retries(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    event, skip = _skip(bench)
    with events.recorded(bench.services, event):
        MessageStore(bench.services.storage.tables, bench.services.storage.blobs).record_skip(skip)
    _queued(bench, event.event_id)  # the writer's wake-up, taken
    bench.receiver.down_for = 1

    def queue_unreachable(*args: object, **kwargs: object) -> None:
        raise ServiceRequestError("queue endpoint unreachable")

    monkeypatch.setattr(events, "wake", queue_unreachable)
    outcome = delivery.deliver(_wake(event.event_id), bench.services)  # does not raise: no quick redelivery
    assert outcome.endswith("HTTP 503; attempt 2 by the sweeper")
    monkeypatch.undo()

    assert delivery.sweep(bench.services) == 0  # not before its back-off (and the writers' grace) passed
    bench.clock.advance(seconds=11, minutes=10)
    assert delivery.sweep(bench.services) == 1
    [wake_up] = _queued(bench, event.event_id)
    bench.clock.advance(seconds=-11, minutes=-10)  # signed at the receiver's own time
    assert "delivered" in delivery.deliver(wake_up, bench.services)
    assert [r.webhook_id for r in bench.receiver.received] == [event.event_id]


def test_a_receiver_that_refuses_connections_is_retried_with_back_off(azurite: Azurite) -> None:
    from devtools.ports import free_port

    settings = make_settings(
        azurite.connection_string,
        ENROLLIO_EVENTS_URL=f"http://127.0.0.1:{free_port()}/hooks",  # nobody listens
        ENROLLIO_EVENTS_SECRET=new_secret(),
    )
    services = Services(settings, FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0)))
    ensure_storage(services.storage)
    now = services.clock.now()
    connection = Connection(
        user_id=f"user-{uuid.uuid4().hex[:8]}", account_id="acct-1", connection_id=uuid.uuid4().hex, address="a@b.c",
        tenant_id="t", user_object_id="o", home_account_id="h", status=Status.CONNECTED, active=True,
        connected_at=now, updated_at=now,
    )  # fmt: skip
    imid = f"<{uuid.uuid4().hex}@home.example>"
    event = events.message_skipped(connection, "thread-1", imid, "inbound", "graph_error", (), now)
    skip = SkipRecord(connection.user_id, "thread-1", connection.connection_id, imid, Direction.INBOUND, "graph_error",
                      (), "", now)  # fmt: skip
    try:
        with events.recorded(services, event):
            MessageStore(services.storage.tables, services.storage.blobs).record_skip(skip)
        outcome = delivery.deliver(_wake(event.event_id), services)
        assert outcome.endswith("no answer (ConnectionError); attempt 2 in 10s"), outcome
        row = OutboxStore(services.storage.tables).get(event.event_id)
        assert row is not None and (row.status, row.last_error) == ("pending", "no answer (ConnectionError)")
    finally:
        services.storage.queue(names.QUEUE_EVENTS).clear_messages()
        OutboxStore(services.storage.tables).delivered(event.event_id)
