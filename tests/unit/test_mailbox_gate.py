"""Graph's per-mailbox limits kept by all instances together (CONTRACT.md section 8: 4 concurrent requests per app
and mailbox; a 429's Retry-After is waited out). Two ``MailboxGate``s over one slot store are two instances over one
storage account; ``tests/integration/test_mailbox_limits.py`` runs them on Blob storage (Azurite) against the
emulator."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from sync_core import names
from sync_core.adapters.graph import GraphClient, GraphUnavailable, StaticToken
from sync_core.adapters.mailbox_gate import (
    MAX_CONCURRENT_PER_MAILBOX,
    POLL_SECONDS,
    BlobSlots,
    Held,
    MailboxGate,
    ProcessSlots,
    SlotTimeout,
)
from sync_core.adapters.storage import StorageClients
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
    assert clock.sleeps == [pytest.approx(3.0 * 1.1)]  # the other instance waited the Retry-After out (+ spread)
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


# -- on Blob storage (Azurite): what instances sharing one storage account see ----------------------------------


@pytest.fixture
def gates_container(storage: StorageClients) -> ContainerClient:
    return storage.blobs.get_container_client(names.CONTAINER_MAILBOX_GATES)


def test_an_instance_keeping_a_mailbox_busy_hands_a_slot_to_another_instance_within_a_hold_and_a_poll(
    gates_container: ContainerClient,
) -> None:
    """Instance A keeps 8 threads of requests on a mailbox without a pause; instance B's requests, arriving later,
    are each admitted within about ``hold`` plus one poll, not starved while A re-leases what it gives back."""
    mailbox, hold = f"fair-{uuid.uuid4().hex[:8]}", 1.0
    a, b = (MailboxGate(BlobSlots(gates_container, lease_seconds=15), hold=hold) for _ in range(2))
    stop = threading.Event()

    def keep_busy() -> None:
        while not stop.is_set():
            held = a.enter(mailbox, timeout=30)
            time.sleep(0.15)
            a.leave(held)

    load = [threading.Thread(target=keep_busy) for _ in range(8)]
    for t in load:
        t.start()
    waits: list[float] = []
    try:
        time.sleep(0.5)  # A holds every slot
        for _ in range(6):
            asked = time.monotonic()
            held = b.enter(mailbox, timeout=hold + POLL_SECONDS[1] + 1.0)
            waits.append(time.monotonic() - asked)
            time.sleep(0.15)
            b.leave(held)
            b.release_all()
    finally:
        stop.set()
        for t in load:
            t.join(30)
        a.release_all()
        b.release_all()
    assert len(waits) == 6 and max(waits) <= hold + POLL_SECONDS[1] + 1.0
    assert a.counts["admitted"] > 20  # A kept working meanwhile


def test_a_shorter_throttle_written_by_another_instance_never_shortens_the_shared_one(
    gates_container: ContainerClient,
) -> None:
    """Instance A's 429 says wait 60 s, instance B's later one says 1 s: a third instance still waits A's 60 s."""
    mailbox, now = f"throttle-{uuid.uuid4().hex[:8]}", time.time()
    a, b, c = (MailboxGate(BlobSlots(gates_container), throttle_read=0.0) for _ in range(3))
    a.throttle(mailbox, now + 60)
    b.throttle(mailbox, now + 1)
    assert c.throttled_until(mailbox) == pytest.approx(now + 60, abs=0.01)


def test_a_request_longer_than_a_slots_lease_keeps_its_slot(gates_container: ContainerClient) -> None:
    """One slot per mailbox here, a 15 s lease (Blob storage's shortest), and a request that takes 17 s (an upload's
    PUT may take up to its 60 s timeout): another instance must not get the slot while it runs."""
    mailbox = f"long-{uuid.uuid4().hex[:8]}"
    first, second = (MailboxGate(BlobSlots(gates_container, limit=1, lease_seconds=15), limit=1) for _ in range(2))
    held = first.enter(mailbox, timeout=5)
    try:
        time.sleep(17)
        with pytest.raises(SlotTimeout):
            second.leave(second.enter(mailbox, timeout=1.0))
    finally:
        first.leave(held)
        first.release_all()
        second.release_all()


def test_requests_waiting_out_a_mailboxs_throttle_do_not_all_go_at_the_same_instant() -> None:
    """Four instances' requests wait out one 429's Retry-After of 5 s: each waits at least that long, and they go
    spread over half a second, not together into the next 429 (the random part is each instance's own)."""
    storage = ProcessSlots()
    MailboxGate(storage).throttle("box", 5.0)  # at Unix second 0 of the fake clocks: Retry-After 5 s
    waited = []
    for jitter in (0.0, 0.33, 0.66, 1.0):
        clock = Clock()
        session = requests.Session()
        session.mount("https://", Scripted([(200, {}, {"id": "x"})]))
        retry = fake_time(clock, budget=20)
        retry.jitter = lambda j=jitter: j  # type: ignore[misc]
        graph = GraphClient(
            BASE, StaticToken("t"), mailbox="box", session=session, retry=retry, gate=MailboxGate(storage)
        )
        assert graph.get_json("/me") == {"id": "x"}
        waited.append(sum(clock.sleeps))
    assert min(waited) >= 5.0
    assert max(waited) - min(waited) >= 0.5 and len(set(waited)) == 4


class BusyStorageFirst(ProcessSlots):
    """Slots whose store answers 503 ServerBusy to the first ``busy`` lease attempts."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    def lease(self, mailbox: str, exclude: set[int]) -> Held | None:
        if self.busy:
            self.busy -= 1
            raise HttpResponseError(message="ServerBusy", response=None)
        return super().lease(mailbox, exclude)


def test_storage_too_busy_to_lease_a_slot_for_a_moment_is_waited_out_not_a_failed_request() -> None:
    """Blob storage answers 503 to two lease attempts: the request waits a poll or two and goes, rather than fail
    (and count a try of its message toward poison)."""
    gate = MailboxGate(BusyStorageFirst(busy=2))
    held = gate.enter("box", timeout=5)
    gate.leave(held)
    assert gate.counts["admitted"] == 1
    gate.release_all()
