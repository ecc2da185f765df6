"""Storage operations per synced message (issue 11): each is a round trip to Azure Storage on the hot path of a
burst, and a count the capacity model multiplies by every message of every mailbox (docs/capacity.md)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from devtools.emulator.notifier import DeliveryFaults
from sync_core.adapters.thread_store import ThreadStore
from sync_core.inbound import MessageRef, Outcome, sync_message
from tests.integration.conftest import Stack
from tests.integration.test_inbound import deliver, start_thread, thread


def test_a_reply_found_by_its_conversation_and_in_reply_to_reads_its_thread_row_once(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = stack.new_mailbox("thread-reads")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))  # synced below, by this test
    try:
        reply = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"])
    finally:
        stack.flush()
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())
    reads: list[str] = []
    here = threading.get_ident()
    original = ThreadStore.get

    def counted(store: ThreadStore, thread_id: str) -> Any:
        if threading.get_ident() == here:  # not the stack's own workers, in this process too
            reads.append(thread_id)
        return original(store, thread_id)

    monkeypatch.setattr(ThreadStore, "get", counted)
    [connection] = [c for c in stack.services.connections.for_user(user_id) if c.syncs]
    result = sync_message(MessageRef(mailbox=connection.mailbox, message_id=reply["id"]), stack.services)

    assert result.outcome is Outcome.STORED
    assert [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]] == [
        sent["internet_message_id"],
        reply["internetMessageId"],
    ]
    assert reads == [sent["thread_id"]]  # by its conversation and by In-Reply-To: the same thread, read once
