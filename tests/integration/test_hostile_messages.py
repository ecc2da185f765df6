"""Messages Azure Tables cannot hold as they are, and messages Graph refuses: each is stored or skipped with a
reason the user sees (``GET /api/users/{id}/skips``), and the next message of that mailbox still syncs, by push and
by catch-up. An Azure Table string property holds 64 KiB (UTF-16), an entity 1 MiB (sync_core.table_limits)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devtools.emulator.mail import _ROUTES as mail_routes
from devtools.emulator.mail import MailApi
from devtools.emulator.notifier import DeliveryFaults
from sync_core import inbound, names
from sync_core.adapters import thread_store
from sync_core.adapters.ops_store import FailureStore
from sync_core.catchup import catch_up
from sync_core.catchup_queue import CatchupRequest
from sync_core.graph_models import MESSAGE_SELECT
from sync_core.threads import StoredMessage, key_of
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_inbound import deliver, skips, start_thread, thread, wait_for_messages
from tests.integration.test_workers import enqueue_pack, failures_for

CONTAINERS = (names.CONTAINER_BODIES, names.CONTAINER_ATTACHMENTS)
LONG_SUBJECT = "RE: Trial class " + "".join(f"{i:05d} " for i in range(40_000 // 6))[: 40_000 - 16]
MANY = [f"parent{i:04d}@families.example" for i in range(2_999)]


def hostile(kind: str, mailbox: str) -> dict[str, Any]:
    """A reply no table row holds as it is: a 40,000-character subject, or 3,000 recipients."""
    if kind == "subject":
        return {"subject": LONG_SUBJECT}
    return {"subject": "RE: Trial class", "to": [mailbox, *MANY]}


@contextmanager
def notifications_lost(stack: Stack) -> Iterator[None]:
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        yield
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())


def scheduled(stack: Stack, user_id: str) -> CatchupRequest:
    [connection] = stack.services.connections.for_user(user_id)
    return CatchupRequest(
        user_id=user_id,
        connection_id=connection.connection_id,
        reason="scheduled",
        requested_at=stack.services.clock.now(),
    )


def by_id(messages: list[dict[str, Any]], internet_message_id: str) -> dict[str, Any]:
    [found] = [m for m in messages if m["internet_message_id"] == internet_message_id]
    return found


def assert_kept_whole(kind: str, message: dict[str, Any], mailbox: str) -> None:
    if kind == "subject":
        assert message["subject"] == LONG_SUBJECT  # whole, from the blob beside the body
    else:
        assert message["to"] == [mailbox, *MANY]


@pytest.mark.parametrize("kind", ["subject", "recipients"])
def test_a_hostile_reply_is_stored_whole_and_the_next_one_syncs_by_push(stack: Stack, user_id: str, kind: str) -> None:
    mailbox = stack.new_mailbox(f"hostile.{kind}")
    sent = start_thread(stack, user_id, mailbox)
    bad = deliver(stack, mailbox, in_reply_to=sent["internet_message_id"], **hostile(kind, mailbox))
    after = deliver(stack, mailbox, subject="RE: Trial class", in_reply_to=sent["internet_message_id"], body_text="ok")
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 3)
    assert_kept_whole(kind, by_id(messages, bad["internetMessageId"]), mailbox)
    assert "ok" in by_id(messages, after["internetMessageId"])["body"]["content"]
    assert skips(stack, user_id) == []
    assert not failures_for(stack, bad["id"])


@pytest.mark.parametrize("kind", ["subject", "recipients"])
def test_a_hostile_reply_is_stored_whole_and_the_next_one_syncs_by_catch_up(
    stack: Stack, user_id: str, kind: str
) -> None:
    mailbox = stack.new_mailbox(f"hostile.catchup.{kind}")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    with notifications_lost(stack):
        bad = deliver(stack, mailbox, in_reply_to=sent["internet_message_id"], **hostile(kind, mailbox))
        after = deliver(stack, mailbox, subject="RE: Trial class", in_reply_to=sent["internet_message_id"])
    tally = catch_up(scheduled(stack, user_id), stack.services)
    assert (tally.get("stored"), tally.get("failed")) == (2, None)
    messages = thread(stack, user_id, sent["thread_id"])["messages"]
    assert_kept_whole(kind, by_id(messages, bad["internetMessageId"]), mailbox)
    assert by_id(messages, after["internetMessageId"])["direction"] == "inbound"


def test_a_reply_storage_still_refuses_is_skipped_as_unstorable_and_the_next_one_syncs(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a row still be refused (here: a row made to keep the whole subject, 40,000 characters, which Azure and
    Azurite refuse with 400 PropertyValueTooLarge), the user sees why and the worker goes on."""
    bounded_row = thread_store._bounded_row

    def whole_subject(message: StoredMessage) -> tuple[dict[str, Any], dict[str, Any]]:
        row, overflow = bounded_row(message)
        return {**row, "Subject": message.subject}, overflow

    monkeypatch.setattr(thread_store, "_bounded_row", whole_subject)
    mailbox = stack.new_mailbox("unstorable")
    sent = start_thread(stack, user_id, mailbox)
    bad = deliver(stack, mailbox, in_reply_to=sent["internet_message_id"], **hostile("subject", mailbox))
    [skip] = wait_until(lambda: stack.flush() or skips(stack, user_id), what="a skip record")
    assert (skip["internet_message_id"], skip["thread_id"], skip["reason"]) == (
        bad["internetMessageId"],
        sent["thread_id"],
        "unstorable",
    )
    assert "PropertyValueTooLarge" in str(skip["details"])
    assert skip["subject"].startswith("RE: Trial class 00000 ")  # the user can tell which message
    wait_until(lambda: failures_for(stack, bad["id"]), what="the operator's failure record")
    # Nothing of it is left in blobs: not its body, nor the overflow the refused row would have named.
    prefix = f"{sent['thread_id']}/{key_of(bad['internetMessageId'])}"
    blobs = stack.services.storage.blobs
    left = [b.name for c in CONTAINERS for b in blobs.get_container_client(c).list_blobs(name_starts_with=prefix)]
    assert left == []
    after = deliver(stack, mailbox, subject="RE: Trial class", in_reply_to=sent["internet_message_id"])
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    assert [m["internet_message_id"] for m in messages] == [sent["internet_message_id"], after["internetMessageId"]]


def quiet_replies(
    stack: Stack, user_id: str, name: str, count: int
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    mailbox = stack.new_mailbox(name)
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    spec = {"subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"]}
    with notifications_lost(stack):
        replies = [deliver(stack, mailbox, **spec, body_text=f"#{i} {uuid.uuid4().hex}") for i in range(count)]
    return mailbox, sent, replies


def test_a_permanent_graph_error_on_the_message_is_a_skip_with_its_reason(stack: Stack, user_id: str) -> None:
    """Graph refuses the full GET of one message (400): a minimal GET finds its thread for the skip row."""
    _, sent, (bad, good) = quiet_replies(stack, user_id, "graph.refuses", 2)
    stack.emulator.faults.configure(fail_paths={f"{bad['id']}?$select={MESSAGE_SELECT}": 400})
    try:
        enqueue_pack(stack, user_id, [bad, good])
        [skip] = wait_until(lambda: skips(stack, user_id), what="a skip record")
        stack.settle()
    finally:
        stack.emulator.faults.reset()
    assert (skip["internet_message_id"], skip["thread_id"], skip["reason"], skip["direction"]) == (
        bad["internetMessageId"],
        sent["thread_id"],
        "graph_error",
        "inbound",
    )
    assert skip["details"] == [{"error": "400 ErrorInvalidRequest: scripted failure (400)"}]
    assert skip["subject"] == "RE: Trial class on Monday"
    [failure] = failures_for(stack, bad["id"])  # and the operator's record
    assert str(failure["error"]).startswith("permanent: graph_error: 400")
    ids = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
    assert ids == [sent["internet_message_id"], good["internetMessageId"]]


def test_a_permanent_graph_error_on_an_attachment_is_a_skip_with_its_reason(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("attachment.refused")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    with notifications_lost(stack):
        bad = deliver(
            stack,
            mailbox,
            subject="RE: Trial class on Monday",
            in_reply_to=sent["internet_message_id"],
            attachments=[{"kind": "file", "name": "form.pdf", "size": 1000}],
        )
    stack.emulator.faults.configure(fail_paths={"/$value": 403})
    try:
        tally = catch_up(scheduled(stack, user_id), stack.services)  # the catch-up records it and goes on
    finally:
        stack.emulator.faults.reset()
    assert tally.get("failed") == 1
    [skip] = skips(stack, user_id)
    assert (skip["internet_message_id"], skip["reason"]) == (bad["internetMessageId"], "graph_error")
    assert skip["details"] == [{"error": "403 ErrorAccessDenied: scripted failure (403)"}]
    operator = FailureStore(stack.services.storage.tables).recent(names.QUEUE_CATCHUP)
    assert any(bad["id"] in str(f["message"]) for f in operator)


def test_a_message_graph_refuses_outright_is_left_to_the_operator(stack: Stack, user_id: str) -> None:
    """When even the minimal GET is refused, which thread it belongs to is unknown: no skip row can say it (R4:
    nothing of a message outside Enrollio's threads is written), the Failures table has it."""
    _, _, (bad,) = quiet_replies(stack, user_id, "graph.refuses.all", 1)
    stack.emulator.faults.configure(fail_paths={bad["id"]: 400})
    try:
        enqueue_pack(stack, user_id, [bad])
        wait_until(lambda: failures_for(stack, bad["id"]), what="the operator's failure record")
    finally:
        stack.emulator.faults.reset()
    assert skips(stack, user_id) == []


def test_a_message_deleted_while_its_attachments_are_read_is_gone_not_a_failure(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user deletes the reply in Outlook between the worker's GET and its attachment's $value (404
    ErrorItemNotFound): like a message deleted before its GET, it is gone: no skip row, no Failures row, no blob."""
    mailbox = stack.new_mailbox("deleted.midway")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    with notifications_lost(stack):
        reply = deliver(
            stack,
            mailbox,
            subject="RE: Trial class on Monday",
            in_reply_to=sent["internet_message_id"],
            attachments=[
                {"kind": "file", "name": "a.pdf", "size": 1000},
                {"kind": "file", "name": "b.pdf", "size": 10},
            ],
        )
    real = MailApi.attachment_value
    calls: list[str] = []

    def deleted_after_the_first(api: MailApi, call: Any) -> Any:
        calls.append(call.request.path)
        if len(calls) == 2:  # the first attachment was read: now the user deletes the message in Outlook
            stack.mail_world("DELETE", f"mail/{mailbox}/messages/{reply['id']}")
        return real(api, call)

    monkeypatch.setattr(MailApi, "attachment_value", deleted_after_the_first)
    monkeypatch.setitem(mail_routes, "messages/{id}/attachments/{id}/$value", {"GET": deleted_after_the_first})
    [connection] = stack.services.connections.for_user(user_id)
    ref = inbound.MessageRef(user_id=user_id, connection_id=connection.connection_id, message_id=reply["id"])
    assert inbound.sync_message(ref, stack.services).outcome is inbound.Outcome.GONE
    values = [e.status for e in stack.emulator.log.snapshot() if reply["id"] in e.path and e.path.endswith("/$value")]
    assert values == [200, 404]  # the second attachment's bytes: the message was gone
    assert skips(stack, user_id) == []
    assert not failures_for(stack, reply["id"])
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1
    assert not list(stack.services.storage.blobs.get_container_client("attachments").list_blobs(sent["thread_id"]))


def test_a_skip_row_goes_when_another_copy_of_the_message_syncs(stack: Stack, user_id: str) -> None:
    """The user's Outlook reply copied to themselves: its Inbox copy is refused by Graph (a graph_error skip), its
    Sent Items copy then syncs: the message is in the thread, and no longer listed as skipped."""
    mailbox = stack.new_mailbox("two.copies")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    contact = deliver(stack, mailbox, subject="RE: Trial class on Monday", in_reply_to=sent["internet_message_id"])
    wait_for_messages(stack, user_id, sent["thread_id"], 2)
    with notifications_lost(stack):
        mine = stack.mail_world(
            "POST", f"mail/{mailbox}/reply", {"message_id": contact["id"], "body_text": "noted", "cc": [mailbox]}
        )
    [inbox_copy] = [
        m
        for m in stack.mail_world("GET", f"mail/{mailbox}/messages?folder=inbox")["value"]
        if m["internetMessageId"] == mine["internetMessageId"]
    ]
    stack.emulator.faults.configure(fail_paths={f"{inbox_copy['id']}?$select={MESSAGE_SELECT}": 400})
    try:
        enqueue_pack(stack, user_id, [inbox_copy])
        [skip] = wait_until(lambda: skips(stack, user_id), what="the Inbox copy's skip")
    finally:
        stack.emulator.faults.reset()
    assert (skip["internet_message_id"], skip["reason"]) == (mine["internetMessageId"], "graph_error")
    enqueue_pack(stack, user_id, [mine])  # the Sent Items copy
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 3)
    assert mine["internetMessageId"] in [m["internet_message_id"] for m in messages]
    wait_until(lambda: skips(stack, user_id) == [], what="the skip row to go")


def test_a_changed_subject_reply_graph_refuses_is_still_a_skip_with_its_reason(stack: Stack, user_id: str) -> None:
    """A contact's reply with a changed subject (a new conversation) belongs to the thread by its In-Reply-To alone:
    when Graph refuses its full GET, the minimal GET must read the headers too, or the user never learns of it."""
    mailbox = stack.new_mailbox("renamed.refused")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    with notifications_lost(stack):
        bad = deliver(
            stack, mailbox, subject="Question", in_reply_to=sent["internet_message_id"], new_conversation=True
        )
    assert bad["conversationId"] != sent["conversation_id"]
    stack.emulator.faults.configure(fail_paths={f"{bad['id']}?$select={MESSAGE_SELECT}": 400})
    try:
        enqueue_pack(stack, user_id, [bad])
        [skip] = wait_until(lambda: skips(stack, user_id), what="a skip record")
    finally:
        stack.emulator.faults.reset()
    assert (skip["internet_message_id"], skip["thread_id"], skip["reason"], skip["subject"]) == (
        bad["internetMessageId"],
        sent["thread_id"],
        "graph_error",
        "Question",
    )
