"""Graph's per-mailbox limits kept by all instances together (CONTRACT.md section 8: 4 concurrent requests per app
and mailbox; a 429's Retry-After is waited out). Two ``MailboxGate``s over one slot store are two instances over one
storage account; ``tests/integration/test_mailbox_limits.py`` runs them on Blob storage (Azurite) against the
emulator."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from sync_core.adapters.graph import GraphClient, GraphUnavailable, StaticToken
from sync_core.adapters.mailbox_gate import MAX_CONCURRENT_PER_MAILBOX, MailboxGate, ProcessSlots, SlotTimeout
from tests.unit.test_graph_client import BASE, THROTTLED, Clock, Scripted, fake_time


class InFlight:
    """Counts requests between enter and leave, across threads, and the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.done = 0

    def run(self, gate: MailboxGate, mailbox: str, requests_: int, seconds: float) -> None:
        for _ in range(requests_):
            held = gate.enter(mailbox, timeout=10)
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(seconds)
            with self.lock:
                self.now -= 1
                self.done += 1
            gate.leave(held)


def test_two_instances_sharing_the_slots_never_have_more_than_four_requests_in_flight() -> None:
    storage = ProcessSlots()
    instances = [MailboxGate(storage, hold=0.05, linger=0.02) for _ in range(2)]
    counter = InFlight()
    threads = [
        threading.Thread(target=counter.run, args=(gate, "box", 15, 0.004)) for gate in instances for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counter.done == 16 * 15
    assert counter.peak == MAX_CONCURRENT_PER_MAILBOX  # the limit is reached, never passed
    # Each instance had its turns: a slot goes back after ``hold`` seconds of use.
    assert all(gate.counts["leased"] >= 1 for gate in instances)


def test_a_slot_serves_the_next_request_without_storage_then_goes_back_when_idle() -> None:
    storage = ProcessSlots()
    gate = MailboxGate(storage, linger=0.05)
    for _ in range(5):
        gate.leave(gate.enter("box", timeout=1))
    assert gate.counts["leased"] == 1 and gate.counts["admitted"] == 5  # one lease for the whole burst
    deadline = time.monotonic() + 5
    others = set(range(1, MAX_CONCURRENT_PER_MAILBOX))
    while storage.lease("box", others) is None:  # slot 0 free again at the store once the janitor gave it back
        assert time.monotonic() < deadline, "the idle slot was never given back"
        time.sleep(0.02)
    assert gate.counts["released"] == 1


def test_when_every_slot_is_held_by_another_instance_a_request_waits_then_gets_one_when_given_back() -> None:
    storage = ProcessSlots()
    busy, waiting = MailboxGate(storage, hold=60), MailboxGate(storage)
    held = [busy.enter("box", timeout=1) for _ in range(MAX_CONCURRENT_PER_MAILBOX)]
    with pytest.raises(SlotTimeout):
        waiting.enter("box", timeout=0.3)
    busy.leave(held.pop())
    busy.release_all()  # the other instance gives its idle slot back
    assert waiting.enter("box", timeout=5).mailbox == "box"


def test_a_429_at_one_instance_holds_back_another_instances_requests_to_the_mailbox() -> None:
    storage = ProcessSlots()
    clock = Clock()
    first, second = (MailboxGate(storage, throttle_read=0.0) for _ in range(2))

    def client(gate: MailboxGate, script: list, budget: float) -> tuple[GraphClient, Scripted]:  # type: ignore[type-arg]
        adapter = Scripted(script)
        session = requests.Session()
        session.mount("https://", adapter)
        retry = fake_time(clock, budget)
        return GraphClient(BASE, StaticToken("t"), mailbox="box", session=session, retry=retry, gate=gate), adapter

    throttled, _ = client(first, [(429, {"Retry-After": "3"}, THROTTLED)], budget=2)
    with pytest.raises(GraphUnavailable):  # three seconds is past its budget: it gives up
        throttled.get_json("/me")
    other, adapter = client(second, [(200, {}, {"id": "x"})], budget=20)
    assert other.get_json("/me") == {"id": "x"}
    assert clock.sleeps == [3.0]  # the other instance waited the Retry-After out before sending
    assert len(adapter.sent) == 1

    late, late_adapter = client(second, [], budget=20)
    first.throttle("box", clock.now + 30)
    with pytest.raises(GraphUnavailable) as refused:  # a throttle past the budget: nothing is sent at all
        late.get_json("/me")
    assert (refused.value.status, refused.value.code, late_adapter.sent) == (429, "mailboxThrottled", [])
    assert refused.value.retry_after == pytest.approx(30)


def test_a_mailbox_whose_slots_stay_busy_is_a_429_the_worker_waits_out() -> None:
    storage = ProcessSlots()
    busy = MailboxGate(storage, hold=60)
    for _ in range(MAX_CONCURRENT_PER_MAILBOX):
        busy.enter("box", timeout=1)
    adapter = Scripted([])
    session = requests.Session()
    session.mount("https://", adapter)
    retry = fake_time(Clock(), budget=0.2)
    graph = GraphClient(BASE, StaticToken("t"), mailbox="box", session=session, retry=retry, gate=MailboxGate(storage))
    with pytest.raises(GraphUnavailable) as refused:
        graph.get_json("/me")
    assert (refused.value.status, refused.value.code, adapter.sent) == (429, "mailboxBusy", [])
