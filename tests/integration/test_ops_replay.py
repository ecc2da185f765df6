"""``python -m sync_core.ops replay-poison`` end to end: a reply the worker gave up on is sent back after the fix,
and the local host's inbound worker syncs it into the thread.

Two ways a message is given up on, each replayed: the worker records a permanent failure in the Failures table
(Graph refused the message: a 400 scripted with ``fail_paths``), and the host moves a message that failed every
retry to ``inbound-messages-poison``, where the poison consumer records it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from devtools.emulator.notifier import DeliveryFaults
from sync_core import names
from sync_core.adapters.ops_store import FailureStore
from sync_core.graph_models import MESSAGE_SELECT
from sync_core.ops.cli import main
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_inbound import CONTACT, skips, start_thread, thread


@pytest.fixture
def lost_reply(stack: Stack, user_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An Enrollio thread and a contact reply whose notification was lost: (the send's answer, the reply)."""
    mailbox = stack.new_mailbox("ops")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {"from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"]}
        reply = stack.mail_world("POST", f"mail/{mailbox}/deliver", {**spec, "body_text": "See you then"})
        stack.flush()
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())
    return sent, reply


def pack_for(stack: Stack, user_id: str, reply: dict[str, Any]) -> str:
    [connection] = stack.services.connections.for_user(user_id)
    return json.dumps(
        {"refs": [{"user_id": user_id, "connection_id": connection.connection_id, "message_id": reply["id"]}]}
    )


def synced(stack: Stack, user_id: str, sent: dict[str, Any]) -> list[str]:
    return [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]


def failures_of(stack: Stack, reply: dict[str, Any]) -> list[dict[str, object]]:
    return [
        f for f in FailureStore(stack.services.storage.tables).recent(names.QUEUE_INBOUND, 500) if reply["id"] in str(f)
    ]


def replay(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["--json", "replay-poison", names.QUEUE_INBOUND], environ=dict(os.environ))
    out = capsys.readouterr().out
    assert code == 0, out
    return dict(json.loads(out))


def test_a_reply_graph_refused_is_synced_when_replayed_after_the_fix(
    stack: Stack, user_id: str, lost_reply: tuple[dict[str, Any], dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    sent, reply = lost_reply
    stack.emulator.faults.configure(fail_paths={reply["id"]: 400})
    try:
        stack.services.storage.queue(names.QUEUE_INBOUND).send_message(pack_for(stack, user_id, reply))
        wait_until(lambda: failures_of(stack, reply), what="the refused reply's failure record")
        stack.settle()
    finally:
        stack.emulator.faults.reset()  # the fix
    assert reply["internetMessageId"] not in synced(stack, user_id, sent)

    report = replay(capsys)

    assert report["from_failures"] >= 1 and report["error"] == ""
    wait_until(lambda: reply["internetMessageId"] in synced(stack, user_id, sent), what="the replayed reply to sync")
    assert not failures_of(stack, reply)  # replayed, so no longer listed as given up on
    assert synced(stack, user_id, sent).count(reply["internetMessageId"]) == 1


def test_a_poisoned_pack_is_synced_when_replayed(
    stack: Stack, user_id: str, lost_reply: tuple[dict[str, Any], dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    sent, reply = lost_reply
    # The host moves a message that failed maxDequeueCount times to <queue>-poison, its text unchanged; the
    # poison consumer records it and takes it off the poison queue.
    stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX).send_message(
        pack_for(stack, user_id, reply)
    )
    wait_until(lambda: failures_of(stack, reply), what="the poison consumer's failure record")
    assert reply["internetMessageId"] not in synced(stack, user_id, sent)

    report = replay(capsys)

    assert report["replayed"] >= 1 and report["error"] == ""
    wait_until(lambda: reply["internetMessageId"] in synced(stack, user_id, sent), what="the replayed reply to sync")
    assert not failures_of(stack, reply)


def test_a_skip_row_goes_once_its_replayed_message_syncs(
    stack: Stack, user_id: str, lost_reply: tuple[dict[str, Any], dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Graph refuses the full GET of the reply (a skip row tells the user why, issue 10); once the operator replays
    it after the fix (issue 14) it syncs, and the user no longer sees it listed as skipped."""
    sent, reply = lost_reply
    stack.emulator.faults.configure(fail_paths={f"{reply['id']}?$select={MESSAGE_SELECT}": 400})
    try:
        stack.services.storage.queue(names.QUEUE_INBOUND).send_message(pack_for(stack, user_id, reply))
        [skip] = wait_until(lambda: skips(stack, user_id), what="the refused reply's skip row")
        wait_until(lambda: failures_of(stack, reply), what="the refused reply's failure record")
        stack.settle()
    finally:
        stack.emulator.faults.reset()  # the fix
    assert (skip["internet_message_id"], skip["reason"]) == (reply["internetMessageId"], "graph_error")

    replay(capsys)

    wait_until(lambda: reply["internetMessageId"] in synced(stack, user_id, sent), what="the replayed reply to sync")
    # The worker forgets the skip row right after it writes the message's row and keys: wait for that too.
    wait_until(lambda: skips(stack, user_id) == [], what="the skip row to go")
