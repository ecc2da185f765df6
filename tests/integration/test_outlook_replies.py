"""The user's own replies written in Outlook (R5), as Graph shows them: the Sent Items copy has no Internet headers
(CONTRACT.md section 4), so only its folder, its conversation and, when those are not enough, its MIME tell which
thread it belongs to and that it is outbound."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.conftest import Stack
from tests.integration.test_inbound import CONTACT, deliver, skips, start_thread, wait_for_messages
from tests.integration.test_workers import failures_for


def outlook_reply(stack: Stack, mailbox: str, message_id: str, **spec: Any) -> dict[str, Any]:
    """The owner replies in Outlook (the emulator's control endpoint): the Sent Items copy."""
    body = {"message_id": message_id, "body_text": f"From Outlook {uuid.uuid4().hex[:6]}", **spec}
    return dict(stack.mail_world("POST", f"mail/{mailbox}/reply", body))


def synced(messages: list[dict[str, Any]], internet_message_id: str) -> dict[str, Any]:
    """The thread's message with that Message-ID (messages sent within one second may come in either order)."""
    [message] = [m for m in messages if m["internet_message_id"] == internet_message_id]
    return message


def a_contacts_reply(stack: Stack, user_id: str, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A thread Enrollio started, and the contact's reply to it, synced: the mailbox, the send answer, the reply."""
    mailbox = stack.new_mailbox(name)
    sent = start_thread(stack, user_id, mailbox)
    reply = deliver(stack, mailbox, subject="RE: Trial class on Monday", in_reply_to=sent["internet_message_id"])
    wait_for_messages(stack, user_id, sent["thread_id"], 2)
    return mailbox, sent, reply


def test_an_outlook_reply_with_a_changed_subject_syncs_as_outbound(stack: Stack, user_id: str) -> None:
    mailbox, sent, contact = a_contacts_reply(stack, user_id, "renamed.reply")
    reply = outlook_reply(stack, mailbox, contact["id"], subject="Change of plan", new_conversation=True)
    assert reply["conversationId"] != sent["conversation_id"]  # Outlook split the conversation
    assert "internetMessageHeaders" not in reply  # and Graph shows no headers for the Sent Items copy
    mine = synced(wait_for_messages(stack, user_id, sent["thread_id"], 3), reply["internetMessageId"])
    assert (mine["direction"], mine["from"], mine["subject"]) == ("outbound", mailbox, "Change of plan")
    # The new conversation is now the thread's too: the contact's answer in it matches by conversationId.
    answer = deliver(stack, mailbox, subject="RE: Change of plan", in_reply_to=reply["internetMessageId"])
    assert answer["conversationId"] == reply["conversationId"]
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 4)
    assert synced(messages, answer["internetMessageId"])["direction"] == "inbound"


def test_an_outlook_reply_sent_as_another_address_is_outbound(stack: Stack, user_id: str) -> None:
    mailbox, sent, contact = a_contacts_reply(stack, user_id, "send.as")
    reply = outlook_reply(stack, mailbox, contact["id"], **{"from": "office@school.example"})
    mine = synced(wait_for_messages(stack, user_id, sent["thread_id"], 3), reply["internetMessageId"])
    assert (mine["from"], mine["direction"]) == ("office@school.example", "outbound")


def test_an_outlook_reply_sent_on_behalf_of_another_address_is_outbound(stack: Stack, user_id: str) -> None:
    """Send on Behalf (CONTRACT.md section 11): from is the office's address, sender the user: still the user's."""
    mailbox, sent, contact = a_contacts_reply(stack, user_id, "on.behalf")
    reply = outlook_reply(stack, mailbox, contact["id"], on_behalf_of="office@school.example")
    mine = synced(wait_for_messages(stack, user_id, sent["thread_id"], 3), reply["internetMessageId"])
    assert (mine["from"], mine["direction"]) == ("office@school.example", "outbound")


def test_an_outlook_reply_to_another_address_of_the_contact_syncs(stack: Stack, user_id: str) -> None:
    mailbox, sent, contact = a_contacts_reply(stack, user_id, "other.address")
    reply = outlook_reply(stack, mailbox, contact["id"], to=["pat.at.work@office.example"])
    mine = synced(wait_for_messages(stack, user_id, sent["thread_id"], 3), reply["internetMessageId"])
    assert (mine["to"], mine["direction"]) == (["pat.at.work@office.example"], "outbound")
    assert CONTACT not in mine["to"]


def test_an_outlook_forward_to_a_colleague_syncs(stack: Stack, user_id: str) -> None:
    mailbox, sent, contact = a_contacts_reply(stack, user_id, "forward")
    forward = outlook_reply(
        stack, mailbox, contact["id"], to=["coach@school.example"], subject="FW: Trial class on Monday"
    )
    mine = synced(wait_for_messages(stack, user_id, sent["thread_id"], 3), forward["internetMessageId"])
    assert (mine["subject"], mine["to"], mine["direction"]) == (
        "FW: Trial class on Monday",
        ["coach@school.example"],
        "outbound",
    )


def test_an_outlook_started_message_whose_mime_graph_refuses_is_ignored_quietly(stack: Stack, user_id: str) -> None:
    """R4: the user's own new mail to a thread's contact matches no thread; its MIME is asked for (it may be a reply
    with a changed subject) and refused: it is still just ignored (no Failures row, no skip), nothing written."""
    mailbox = stack.new_mailbox("mime.refused")
    start_thread(stack, user_id, mailbox)  # the contact is a thread's contact now
    stack.settle()
    stack.emulator.faults.configure(fail_paths={"/$value": 403})
    try:
        started = stack.mail_world(
            "POST", f"mail/{mailbox}/send", {"to": [CONTACT], "subject": "Private", "body_text": "hi"}
        )
        stack.settle()
    finally:
        stack.emulator.faults.reset()
    refused = [e for e in stack.emulator.log.snapshot() if started["id"] in e.path and e.path.endswith("/$value")]
    assert [e.status for e in refused] == [403]  # it was asked, and refused
    assert not failures_for(stack, started["id"])
    assert skips(stack, user_id) == []


def test_a_sent_items_folder_graph_refuses_to_name_is_asked_once_not_for_every_message(
    stack: Stack, user_id: str
) -> None:
    """Graph refuses the Sent Items folder lookup for good (403): the mailbox's mail still syncs, told by its
    address, and the refused request is not repeated for each of its messages (it is remembered for an hour)."""
    mailbox = stack.new_mailbox("no.folder")
    stack.emulator.faults.configure(fail_paths={"/mailFolders/sentitems": 403})
    try:
        sent = start_thread(stack, user_id, mailbox)  # the connect's own lookup is refused too
        stack.settle()  # and its first messages' (the draft, the Sent Items copy): now it is remembered
        stack.emulator.log.clear()
        for n in range(3):
            deliver(stack, mailbox, subject="RE: Trial class on Monday", in_reply_to=sent["internet_message_id"],
                    body_text=f"reply {n}")  # fmt: skip
            wait_for_messages(stack, user_id, sent["thread_id"], 2 + n)
        stack.settle()
    finally:
        stack.emulator.faults.reset()
    box = stack.world.mailbox(mailbox)
    assert box is not None
    asked = [e for e in stack.emulator.log.snapshot() if e.mailbox_id == box.id and "/mailFolders/sentitems" in e.path]
    assert asked == []  # three replies synced, and the refused lookup was not repeated for any of them


def test_the_users_ordinary_outlook_mail_costs_one_request_and_leaves_nothing(stack: Stack, user_id: str) -> None:
    """R4 and make bench: mail the user writes in Outlook to someone who is no thread's contact, in no thread's
    conversation, is ignored after its one GET; its MIME is not read (that cost 2 requests a message before)."""
    mailbox = stack.new_mailbox("ordinary")
    start_thread(stack, user_id, mailbox)
    stack.settle()
    box = stack.world.mailbox(mailbox)
    assert box is not None
    stack.emulator.log.clear()
    own = stack.mail_world(
        "POST", f"mail/{mailbox}/send", {"to": ["colleague@school.example"], "subject": "Lunch?", "body_text": "hi"}
    )
    stack.settle()
    routes = [e.route for e in stack.emulator.log.snapshot() if e.mailbox_id == box.id and own["id"] in e.path]
    assert routes == ["GET /users/{id}/messages/{id}"]
    assert skips(stack, user_id) == [] and not failures_for(stack, own["id"])
