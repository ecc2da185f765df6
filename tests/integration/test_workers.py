"""The workers' failure model through the queue functions: one test per failure class (sync_core.failures).

A pack of message references goes onto ``inbound-messages`` as the webhook writes it; the local host runs
``inbound_worker`` on it. The emulator is scripted (``fail_paths``) to refuse one message for good (400) or for a
while (503), and its request log shows which messages were fetched, and how often.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from devtools.emulator.notifier import DeliveryFaults
from sync_core import names
from sync_core.adapters.ops_store import FailureStore
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_inbound import CONTACT, start_thread, thread


@pytest.fixture
def quiet_mailbox(stack: Stack, user_id: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """A connected mailbox with an Enrollio thread and three contact replies whose notifications were lost."""
    mailbox = stack.new_mailbox("workers")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {"from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"]}
        replies = [
            stack.mail_world("POST", f"mail/{mailbox}/deliver", {**spec, "body_text": f"#{i}"}) for i in range(3)
        ]
        stack.flush()
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())
    return mailbox, sent, replies


def enqueue_pack(stack: Stack, user_id: str, replies: list[dict[str, Any]]) -> str:
    [connection] = stack.services.connections.for_user(user_id)
    refs = [{"user_id": user_id, "connection_id": connection.connection_id, "message_id": r["id"]} for r in replies]
    body = json.dumps({"refs": refs})
    stack.services.storage.queue(names.QUEUE_INBOUND).send_message(body)
    return body


def fetches(stack: Stack, message_id: str) -> int:
    """GETs of one message itself (not its attachments) that the emulator answered."""
    return sum(1 for e in stack.emulator.log.snapshot() if e.method == "GET" and e.path.endswith(f"/{message_id}"))


def stored_ids(stack: Stack, user_id: str, thread_id: str) -> list[str]:
    return [m["internet_message_id"] for m in thread(stack, user_id, thread_id)["messages"]]


def failures_for(stack: Stack, message_id: str) -> list[dict[str, object]]:
    return [f for f in FailureStore(stack.services.storage.tables).recent(names.QUEUE_INBOUND) if message_id in str(f)]


def test_a_permanent_graph_error_records_one_reference_and_never_refetches_the_others(
    stack: Stack, user_id: str, quiet_mailbox: tuple[str, dict[str, Any], list[dict[str, Any]]]
) -> None:
    _, sent, (good1, bad, good2) = quiet_mailbox
    stack.emulator.faults.configure(fail_paths={bad["id"]: 400})
    try:
        enqueue_pack(stack, user_id, [good1, bad, good2])
        wait_until(lambda: failures_for(stack, bad["id"]), what="the refused message's failure record")
        stack.settle()
    finally:
        stack.emulator.faults.reset()
    ids = stored_ids(stack, user_id, sent["thread_id"])
    assert good1["internetMessageId"] in ids and good2["internetMessageId"] in ids
    assert bad["internetMessageId"] not in ids
    [failure] = failures_for(stack, bad["id"])
    assert str(failure["error"]).startswith("permanent: graph_error: 400")
    # Never retried: the refused message was asked for once in full and once minimally (which of the user's threads
    # it belongs to, for a skip row: refused too, so none), and its neighbours were not fetched again.
    assert (fetches(stack, good1["id"]), fetches(stack, bad["id"]), fetches(stack, good2["id"])) == (1, 2, 1)


def test_a_transient_graph_error_requeues_only_what_failed_and_it_syncs_once_graph_recovers(
    stack: Stack, user_id: str, quiet_mailbox: tuple[str, dict[str, Any], list[dict[str, Any]]]
) -> None:
    _, sent, (good1, flaky, good2) = quiet_mailbox
    stack.emulator.faults.configure(fail_paths={flaky["id"]: 503}, retry_after_seconds=1)
    try:
        enqueue_pack(stack, user_id, [good1, flaky, good2])
        wait_until(
            lambda: len(stored_ids(stack, user_id, sent["thread_id"])) == 3, what="the two good replies", timeout=40
        )
        assert fetches(stack, flaky["id"]) >= 1
    finally:
        stack.emulator.faults.reset()
    wait_until(
        lambda: flaky["internetMessageId"] in stored_ids(stack, user_id, sent["thread_id"]),
        what="the retry",
        timeout=40,
    )
    assert stored_ids(stack, user_id, sent["thread_id"]).count(flaky["internetMessageId"]) == 1
    assert (fetches(stack, good1["id"]), fetches(stack, good2["id"])) == (1, 1)
    assert not failures_for(stack, flaky["id"])
    poison = stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX)
    assert not [m for m in poison.peek_messages(max_messages=32) if flaky["id"] in m.content]


def test_a_malformed_pack_is_recorded_once_and_never_retried(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    body = f'{{"refs": [{{"user_id": "{marker}"'  # cut short: not JSON
    stack.services.storage.queue(names.QUEUE_INBOUND).send_message(body)
    recorded = wait_until(lambda: failures_for(stack, marker), what="the failure record")
    assert str(recorded[0]["error"]).startswith("malformed: inbound pack is not JSON")
    stack.settle()
    assert len(failures_for(stack, marker)) == 1
    poison = stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX)
    assert not [m for m in poison.peek_messages(max_messages=32) if marker in m.content]


def test_a_malformed_reference_is_recorded_and_its_neighbours_still_sync(
    stack: Stack, user_id: str, quiet_mailbox: tuple[str, dict[str, Any], list[dict[str, Any]]]
) -> None:
    _, sent, (good1, _, good2) = quiet_mailbox
    [connection] = stack.services.connections.for_user(user_id)
    marker = uuid.uuid4().hex
    refs = [
        {"user_id": user_id, "connection_id": connection.connection_id, "message_id": good1["id"]},
        {"user_id": user_id, "connection_id": marker},  # no message_id
        {"user_id": user_id, "connection_id": connection.connection_id, "message_id": good2["id"]},
    ]
    stack.services.storage.queue(names.QUEUE_INBOUND).send_message(json.dumps({"refs": refs}))
    recorded = wait_until(lambda: failures_for(stack, marker), what="the failure record")
    assert "message_id" in str(recorded[0]["error"])
    stack.settle()
    ids = stored_ids(stack, user_id, sent["thread_id"])
    assert good1["internetMessageId"] in ids and good2["internetMessageId"] in ids


def _pack_of(marker: str, *message_ids: str, attempt: int = 0) -> str:
    refs = [{"user_id": "u", "connection_id": marker, "message_id": m} for m in message_ids]
    return json.dumps({"refs": refs, "attempt": attempt})


@pytest.fixture
def separate_queue(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Re-queued packs go to a fresh queue no worker reads, so the test can look at them."""
    from azure.storage.queue import QueueClient

    name = f"requeued-{uuid.uuid4().hex[:8]}"
    fresh = QueueClient.from_connection_string(stack.azurite.connection_string, name)
    fresh.create_queue()
    original = stack.services.storage.queue
    monkeypatch.setattr(stack.services.storage, "queue", lambda q: fresh if q == names.QUEUE_INBOUND else original(q))
    yield fresh
    fresh.delete_queue()


def test_a_pack_retried_five_times_is_recorded_with_its_last_error_not_requeued_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, separate_queue: Any
) -> None:
    from sync_core import workers

    def throttled(ref: Any, services: Any) -> Any:
        raise workers.Transient("Graph unavailable (503 serviceNotAvailable): down", 1.0)

    monkeypatch.setattr(workers, "sync_message", throttled)
    marker = uuid.uuid4().hex
    report = workers.sync_pack(_pack_of(marker, "m1", attempt=workers.MAX_ATTEMPTS - 1), stack.services)
    assert report.retried == 0
    assert report.recorded == ["transient: gave up after 5 attempts: Graph unavailable (503 serviceNotAvailable): down"]
    assert separate_queue.get_queue_properties().approximate_message_count == 0
    assert [f["error"] for f in failures_for(stack, marker)] == report.recorded


def test_the_longest_retry_after_of_a_pack_is_honoured_and_unexpected_errors_are_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, separate_queue: Any
) -> None:
    from sync_core import workers
    from sync_core.adapters.graph import GraphUnavailable

    def outcome(ref: Any, services: Any) -> Any:
        if ref.message_id == "slow":
            raise GraphUnavailable(503, "serviceNotAvailable", "come back later", 60.0)
        raise ValueError("a bug, not a malformed message")

    monkeypatch.setattr(workers, "sync_message", outcome)
    marker = uuid.uuid4().hex
    report = workers.sync_pack(_pack_of(marker, "slow", "buggy"), stack.services)
    assert (report.retried, report.retry_after, report.recorded) == (2, 60.0, [])
    assert separate_queue.peek_messages() == []  # invisible for the delay
    assert separate_queue.get_queue_properties().approximate_message_count == 1
    assert not failures_for(stack, marker)


def test_when_requeueing_fails_nothing_is_recorded_so_the_hosts_retry_records_nothing_twice(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import ServiceRequestError

    from sync_core import workers
    from sync_core.adapters.graph import GraphError, GraphUnavailable

    def outcome(ref: Any, services: Any) -> Any:
        if ref.message_id == "refused":
            raise GraphError(400, "ErrorInvalidRequest", "never")
        raise GraphUnavailable(503, "serviceNotAvailable", "down", 1.0)

    class Unreachable:
        def send_message(self, *args: Any, **kwargs: Any) -> None:
            raise ServiceRequestError("storage unreachable")

    monkeypatch.setattr(workers, "sync_message", outcome)
    original = stack.services.storage.queue
    monkeypatch.setattr(
        stack.services.storage, "queue", lambda q: Unreachable() if q == names.QUEUE_INBOUND else original(q)
    )
    marker = uuid.uuid4().hex
    with pytest.raises(ServiceRequestError):
        workers.run_inbound(_pack_of(marker, "refused", "flaky"), stack.services)
    assert not failures_for(stack, marker)
