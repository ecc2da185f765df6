"""What operators see when a queue message cannot be processed: the Failures table, with the reason."""

from __future__ import annotations

import json
import uuid

from sync_core import names
from sync_core.adapters.ops_store import FailureStore
from tests.integration.conftest import Stack, wait_until


def failures(stack: Stack, queue: str) -> list[dict[str, object]]:
    return FailureStore(stack.services.storage.tables).recent(queue)


def test_a_malformed_message_is_recorded_at_once_and_not_retried(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    stack.services.storage.queue(names.QUEUE_CATCHUP).send_message(json.dumps({"nonsense": marker}))
    recorded = wait_until(
        lambda: [f for f in failures(stack, names.QUEUE_CATCHUP) if marker in str(f["message"])],
        what="the failure record",
    )
    assert str(recorded[0]["error"]).startswith("malformed:")
    assert "user_id" in str(recorded[0]["error"])  # names the missing field
    # Handled, so deleted: a retried message would be recorded once per attempt, or land in the poison queue.
    assert len([f for f in failures(stack, names.QUEUE_CATCHUP) if marker in str(f["message"])]) == 1
    poison = stack.services.storage.queue(names.QUEUE_CATCHUP + names.POISON_SUFFIX)
    assert not [m for m in poison.peek_messages(max_messages=32) if marker in m.content]


def test_a_poisoned_message_is_recorded_with_the_last_error_its_worker_noted(stack: Stack) -> None:
    body = json.dumps({"refs": [{"user_id": "u", "connection_id": uuid.uuid4().hex, "message_id": "m"}]})
    store = FailureStore(stack.services.storage.tables)
    store.note_error(
        names.QUEUE_INBOUND, body, "GraphUnavailable: Graph 503 serviceNotAvailable", stack.services.clock.now()
    )
    # The host moves a message that failed maxDequeueCount times to <queue>-poison, content unchanged.
    stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX).send_message(body)
    recorded = wait_until(
        lambda: [f for f in failures(stack, names.QUEUE_INBOUND) if f["message"] == body], what="the failure record"
    )
    assert recorded[0]["error"] == "GraphUnavailable: Graph 503 serviceNotAvailable"
