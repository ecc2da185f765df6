"""Inbound sync (issue 5): Graph notification -> webhook -> queue -> worker -> tables and blobs, exactly once,
with delta catch-up. Each step of the demo story is a test asserting the stored rows and blob bytes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
import requests

from devtools.emulator import mail_delta
from devtools.emulator.mail_store import MailStore
from devtools.emulator.notifier import DeliveryFaults
from sync_core import catchup, names
from sync_core.catchup import catch_up
from sync_core.catchup_queue import CatchupRequest
from sync_core.inbound import MessageRef, Outcome, sync_message
from tests.integration.conftest import Stack, wait_until

MIB = 1024 * 1024
CONTACT = "parent@home.example"


def deliver(stack: Stack, mailbox: str, **spec: Any) -> dict[str, Any]:
    return dict(stack.mail_world("POST", f"mail/{mailbox}/deliver", {"from": CONTACT, "body_text": "Thanks!", **spec}))


def thread(stack: Stack, user_id: str, thread_id: str) -> dict[str, Any]:
    response = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def skips(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    return list(stack.enrollio.call("GET", f"/api/users/{user_id}/skips").json()["skips"])


def start_thread(stack: Stack, user_id: str, mailbox: str, subject: str = "Trial class on Monday") -> dict[str, Any]:
    """Connect ``mailbox`` and send the first email of a thread from Enrollio."""
    stack.connect(user_id, mailbox)
    body = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": CONTACT, "name": "Pat Parent"},
        "subject": subject,
        "html": "<p>See you Monday!</p>",
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for_messages(stack: Stack, user_id: str, thread_id: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        stack.flush()
        messages = thread(stack, user_id, thread_id)["messages"]
        return messages if len(messages) >= count else None

    return list(wait_until(ready, what=f"{count} messages in the thread"))


def asked_now(request: CatchupRequest, stack: Stack) -> CatchupRequest:
    """The same request asked again now, as the next timer tick would (a request a completed run covers is
    dropped: ``catchup_runs``)."""
    return request.model_copy(update={"requested_at": stack.services.clock.now()})


def reconnect_a_second_later(stack: Stack, user_id: str, mailbox: str) -> None:
    """Sign in again once the clock is in the next second: Graph shows receivedDateTime in whole seconds, and mail
    of the sign-in's own second syncs (R8's start is the whole second), which a person could not do this fast."""
    time.sleep(1 - dt.datetime.now(dt.UTC).microsecond / 1_000_000 + 0.01)
    stack.connect(user_id, mailbox)


def test_the_contacts_reply_with_a_1_mb_attachment_syncs_with_its_bytes(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("story.reply")
    sent = start_thread(stack, user_id, mailbox)
    data = bytes(range(251)) * (MIB // 251)  # about 1 MB, not a repeating power of two
    deliver(
        stack,
        mailbox,
        subject="RE: Trial class on Monday",
        in_reply_to=sent["internet_message_id"],
        body_text="Great, here is the form.",
        attachments=[
            {
                "kind": "file",
                "name": "form.pdf",
                "content_base64": base64.b64encode(data).decode(),
                "content_type": "application/pdf",
            }
        ],
    )
    first, reply = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    assert (first["direction"], first["origin"]) == ("outbound", "enrollio")
    assert (reply["direction"], reply["from"]) == ("inbound", CONTACT)
    assert "here is the form" in reply["body"]["content"]
    [attachment] = reply["attachments"]
    assert (attachment["name"], attachment["size"]) == ("form.pdf", len(data))
    assert stack.enrollio.call("GET", attachment["download"], params={"user_id": user_id}).content == data


def test_the_users_reply_from_outlook_syncs_as_outbound(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("story.outlook")
    sent = start_thread(stack, user_id, mailbox)
    contact_reply = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"])
    stack.mail_world(
        "POST", f"mail/{mailbox}/reply", {"message_id": contact_reply["id"], "body_text": "Perfect, thanks"}
    )
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 3)
    assert [(m["direction"], m["origin"]) for m in messages] == [
        ("outbound", "enrollio"),
        ("inbound", "outlook"),
        ("outbound", "outlook"),
    ]
    assert messages[2]["from"] == mailbox


def test_a_reply_with_a_4_mb_attachment_is_skipped_with_its_reason(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("story.large")
    sent = start_thread(stack, user_id, mailbox)
    big = deliver(
        stack,
        mailbox,
        subject="RE: Trial",
        in_reply_to=sent["internet_message_id"],
        attachments=[
            {"kind": "file", "name": "video.mp4", "size": 4 * MIB},
            {"kind": "file", "name": "note.txt", "size": 10},
        ],
    )
    [skip] = wait_until(lambda: stack.flush() or skips(stack, user_id), what="a skip record")
    assert skip["reason"] == "attachment_too_large"
    [detail] = skip["details"]  # far over: never downloaded, so the size Graph reports (CONTRACT.md section 5)
    assert (detail["name"], detail["cap"]) == ("video.mp4", 3 * MIB) and 4 * MIB <= detail[
        "graph_size"
    ] < 4 * MIB + 4096
    assert "measured_size" not in detail
    assert skip["internet_message_id"] == big["internetMessageId"]
    assert skip["thread_id"] == sent["thread_id"]
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1  # the message did not sync


def _storage_mentions(stack: Stack, needle: str) -> list[str]:
    """Every table row and blob in the service's storage whose content contains ``needle``."""
    found = []
    for table in names.TABLES:
        for entity in stack.services.storage.tables.get_table_client(table).list_entities():
            if needle in json.dumps(dict(entity), default=str):
                found.append(f"{table}/{entity['PartitionKey']}")
    for container in names.CONTAINERS:
        client = stack.services.storage.blobs.get_container_client(container)
        for blob in client.list_blobs():
            if needle.encode() in client.download_blob(blob.name).readall():
                found.append(f"{container}/{blob.name}")
    return found


def test_a_thread_started_in_outlook_leaves_nothing_in_storage(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("story.outlookthread")
    stack.connect(user_id, mailbox)
    subject = f"Private note {uuid.uuid4().hex}"
    started = stack.mail_world("POST", f"mail/{mailbox}/send", {"to": [CONTACT], "subject": subject, "body_text": "hi"})
    deliver(stack, mailbox, subject=f"RE: {subject}", in_reply_to=started["internetMessageId"])
    stack.settle()
    assert _storage_mentions(stack, subject) == []
    assert _storage_mentions(stack, started["internetMessageId"]) == []


def test_the_sent_items_copy_and_duplicated_notifications_make_exactly_one_row(stack: Stack, user_id: str) -> None:
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(duplicate_rate=1.0))
    try:
        mailbox = stack.new_mailbox("dupes")
        sent = start_thread(stack, user_id, mailbox)
        deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"])
        wait_for_messages(stack, user_id, sent["thread_id"], 2)
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())
    stack.settle()
    messages = thread(stack, user_id, sent["thread_id"])["messages"]
    assert len(messages) == 2
    assert len({m["internet_message_id"] for m in messages}) == 2


def test_an_unrelated_message_sharing_the_conversation_id_is_not_attached(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("collision")
    sent = start_thread(stack, user_id, mailbox)
    stranger = deliver(stack, mailbox, **{"from": "stranger@elsewhere.example", "subject": "Unrelated"})
    # Exchange reusing the thread's conversationId for an unrelated message: set it on the emulator's copy.
    box = MailStore.of(stack.world).box_of(mailbox)
    assert box is not None
    with stack.world.lock:
        message = box.message(stranger["id"])
        assert message is not None
        message.conversation_id = sent["conversation_id"]
    connection = stack.services.connections.for_user(user_id)[0]
    result = sync_message(
        MessageRef(user_id=user_id, connection_id=connection.connection_id, message_id=stranger["id"]), stack.services
    )
    assert result.outcome is Outcome.IGNORED
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1


def test_a_reply_with_a_changed_subject_in_a_new_conversation_matches_through_in_reply_to(
    stack: Stack, user_id: str
) -> None:
    mailbox = stack.new_mailbox("renamed")
    sent = start_thread(stack, user_id, mailbox)
    renamed = deliver(
        stack, mailbox, subject="Different subject", in_reply_to=sent["internet_message_id"], new_conversation=True
    )
    assert renamed["conversationId"] != sent["conversation_id"]
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    assert messages[1]["subject"] == "Different subject"
    # The new conversation is now an alias: a later message in it matches by conversationId alone.
    deliver(stack, mailbox, subject="Different subject", in_reply_to=renamed["internetMessageId"])
    wait_for_messages(stack, user_id, sent["thread_id"], 3)


def test_dropped_notifications_are_recovered_by_catch_up_exactly_once(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("dropped")
    sent = start_thread(stack, user_id, mailbox)
    stack.flush()
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=0.3, seed=7))
    try:
        delivered = [
            deliver(stack, mailbox, subject=f"RE: Trial {i}", in_reply_to=sent["internet_message_id"])
            for i in range(10)
        ]
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    assert notifier.dropped, "the fault dropped nothing: the test would prove nothing"
    connection = stack.services.connections.for_user(user_id)[0]
    request = CatchupRequest(
        user_id=user_id, connection_id=connection.connection_id, reason="test", requested_at=stack.services.clock.now()
    )
    catch_up(request, stack.services)
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 11)
    ids = [m["internet_message_id"] for m in messages]
    assert sorted(ids[1:]) == sorted(d["internetMessageId"] for d in delivered)
    assert len(ids) == len(set(ids)) == 11
    catch_up(asked_now(request, stack), stack.services)  # a second run replays nothing into a second row
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 11


def _post_notification(stack: Stack, item: dict[str, Any]) -> requests.Response:
    return requests.post(f"{stack.enrollio.base_url}/api/graph/notifications", json={"value": [item]}, timeout=10)


def test_spoofed_unknown_and_foreign_notifications_queue_nothing(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("spoof")
    stack.connect(user_id, mailbox)
    connection = stack.services.connections.for_user(user_id)[0]
    [sub] = stack.services.subscriptions.for_connection(connection.connection_id)
    good = {
        "subscriptionId": sub.subscription_id,
        "clientState": sub.client_state,
        "tenantId": sub.tenant_id,
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "resourceData": {"id": "y"},
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
    }
    for spoof, reason in [
        ({"clientState": "guessed"}, "client_state_mismatch"),
        ({"subscriptionId": str(uuid.uuid4())}, "unknown_subscription"),
        ({"tenantId": str(uuid.uuid4())}, "tenant_mismatch"),
    ]:
        response = _post_notification(stack, {**good, **spoof})
        assert response.status_code == 202
        assert response.json() == {"accepted": 0, "rejected": {reason: 1}, "queued_messages": 0}
    assert _post_notification(stack, good).json()["accepted"] == 1
    malformed = requests.post(f"{stack.enrollio.base_url}/api/graph/notifications", data=b"{nope", timeout=10)
    assert malformed.status_code == 400


def test_one_graph_request_per_synced_message_without_attachments(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("counted")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()  # the draft's and the Sent Items copy's notifications are handled
    mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
    stack.emulator.log.clear()
    reply = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"])
    wait_for_messages(stack, user_id, sent["thread_id"], 2)
    stack.settle()
    log = stack.emulator.log.snapshot()
    graph_calls = [e for e in log if e.mailbox_id == mailbox_id and e.path.startswith("/v1.0/")]
    assert [e.route for e in graph_calls] == ["GET /users/{id}/messages/{id}"]
    assert graph_calls[0].path.endswith(reply["id"])


def test_after_update_email_the_old_thread_keeps_syncing_and_disconnect_stops_it(stack: Stack, user_id: str) -> None:
    old = stack.new_mailbox("keep.old")
    sent = start_thread(stack, user_id, old)
    stack.connect(user_id, stack.new_mailbox("keep.new"))
    deliver(stack, old, subject="RE: Trial", in_reply_to=sent["internet_message_id"])
    wait_for_messages(stack, user_id, sent["thread_id"], 2)
    old_connection = next(c for c in stack.services.connections.for_user(user_id) if c.address == old)
    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": old_connection.connection_id}
    )
    deliver(stack, old, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="after disconnect")
    stack.settle()
    result = sync_message(
        MessageRef(user_id=user_id, connection_id=old_connection.connection_id, message_id="any"), stack.services
    )
    assert result.outcome is Outcome.NOT_SYNCING
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 2


def test_mail_that_arrived_while_the_grant_was_revoked_syncs_after_reconnecting(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("gap")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
    stack.emulator.identity.revoke(mailbox_id)  # Graph pauses the subscription: reauthorizationRequired
    stack.emulator.identity.expire_access_tokens(mailbox_id)

    def status() -> str:
        return str(stack.enrollio.call("GET", f"/api/users/{user_id}/connections").json()["connections"][0]["status"])

    wait_until(lambda: status() == "needs_reconnect", what="needs_reconnect")
    during = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="hello?")
    stack.settle()
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1  # no notification while paused
    stack.connect(user_id, mailbox)
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    assert messages[1]["internet_message_id"] == during["internetMessageId"]
    assert status() == "active"


def test_a_lost_grants_backlog_over_delta_s_cap_syncs_whole_after_reconnecting(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONTRACT.md section 7: a filtered delta round stops at 5,000 messages as if complete, and Graph sends no
    notification while a grant is lost. With the cap lowered to 2, three replies of that time must all sync: the
    capped round is filled in by a list query of its window (section 4, "List paging")."""
    monkeypatch.setattr(mail_delta, "FILTERED_ROUND_CAP", 2)  # Graph's cap, in the emulator
    monkeypatch.setattr(catchup, "FILTERED_ROUND_CAP", 2)  # what the service knows of it
    mailbox = stack.new_mailbox("capped")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    [connection] = stack.services.connections.for_user(user_id)
    scheduled = CatchupRequest(
        user_id=user_id,
        connection_id=connection.connection_id,
        reason="scheduled",
        requested_at=stack.services.clock.now(),
    )
    catch_up(
        asked_now(scheduled, stack), stack.services
    )  # the cursors hold deltaLinks (filtered ones) before the grant is lost
    mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
    stack.emulator.identity.revoke(mailbox_id)
    stack.emulator.identity.expire_access_tokens(mailbox_id)
    wait_until(
        lambda: (
            stack.services.connections.get(user_id, connection.connection_id).status.value  # type: ignore[union-attr]
            == "needs_reconnect"
        ),
        what="needs_reconnect",
    )
    during = [
        deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text=f"reply {n}")
        for n in range(3)
    ]
    stack.settle()
    stack.connect(user_id, mailbox)  # the repair asks for a catch-up: its Inbox round is capped at 2
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 4)
    assert {m["internet_message_id"] for m in messages[1:]} == {d["internetMessageId"] for d in during}
    listed = [e for e in stack.emulator.log.snapshot() if e.route == "GET /users/{id}/mailFolders/{id}/messages"]
    assert [e.status for e in listed if e.mailbox_id == mailbox_id] == [200]  # the Inbox's window, listed once


def test_mail_during_a_reauthorization_pause_syncs_in_one_catch_up_run(stack: Stack, user_id: str) -> None:
    """CONTRACT.md 3.2: after reauthorizationRequired, changes during the pause are lost to push: run delta for
    them. The catch-up timer (15 minutes) does not run here: only the lifecycle event's own catch-up can sync it."""
    mailbox = stack.new_mailbox("paused")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    [connection] = stack.services.connections.for_user(user_id)
    [subscription] = stack.services.subscriptions.for_connection(connection.connection_id)
    graph = stack.emulator.subscriptions
    graph.pause(subscription.subscription_id)
    during = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="paused")
    stack.flush()
    assert len(thread(stack, user_id, sent["thread_id"])["messages"]) == 1  # no notification while paused
    graph.lifecycle(subscription.subscription_id, "reauthorizationRequired")
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    assert messages[1]["internet_message_id"] == during["internetMessageId"]


def test_mail_of_the_disconnected_time_does_not_sync_after_reconnecting_but_later_mail_does(
    stack: Stack, user_id: str
) -> None:
    """R8: a reconnect after an explicit disconnect resumes from the reconnect time."""
    mailbox = stack.new_mailbox("r8.gap")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    [connection] = stack.services.connections.for_user(user_id)
    scheduled = CatchupRequest(
        user_id=user_id,
        connection_id=connection.connection_id,
        reason="scheduled",
        requested_at=stack.services.clock.now(),
    )
    catch_up(
        asked_now(scheduled, stack), stack.services
    )  # the connection has delta cursors, as the 15-minute timer leaves them
    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": connection.connection_id}
    )
    during = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="gap")
    stack.settle()
    reconnect_a_second_later(stack, user_id, mailbox)
    stack.settle()
    catch_up(asked_now(scheduled, stack), stack.services)  # the next scheduled catch-up
    after = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="back")
    wait_for_messages(stack, user_id, sent["thread_id"], 2)
    catch_up(asked_now(scheduled, stack), stack.services)  # and the one after it
    ids = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
    assert ids == [sent["internet_message_id"], after["internetMessageId"]]
    assert during["internetMessageId"] not in ids


def test_mail_of_the_disconnected_time_read_after_reconnecting_still_does_not_sync(stack: Stack, user_id: str) -> None:
    """R8, enforced by the service and not left to delta's filter: a filtered delta still reports changes to older
    messages (the emulator's assumption after microsoft-graph-docs-contrib#9760), so reading the gap's reply in
    Outlook after reconnecting brings it back to a catch-up, which must still leave it out."""
    mailbox = stack.new_mailbox("r8.read")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    [connection] = stack.services.connections.for_user(user_id)
    scheduled = CatchupRequest(
        user_id=user_id,
        connection_id=connection.connection_id,
        reason="scheduled",
        requested_at=stack.services.clock.now(),
    )
    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": connection.connection_id}
    )
    during = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="gap")
    mine = stack.mail_world("POST", f"mail/{mailbox}/reply", {"message_id": during["id"], "body_text": "seen it"})
    stack.settle()
    reconnect_a_second_later(stack, user_id, mailbox)
    stack.settle()
    catch_up(
        asked_now(scheduled, stack), stack.services
    )  # the first rounds after the reconnect: filtered, nothing of the gap
    stack.mail_world("PATCH", f"mail/{mailbox}/messages/{during['id']}", {"is_read": True})  # the user reads it
    stack.mail_world("PATCH", f"mail/{mailbox}/messages/{mine['id']}", {"flag": "flagged"})  # and flags their reply
    tally = catch_up(asked_now(scheduled, stack), stack.services)
    assert tally.get("ignored") == 2  # seen again by delta, and left out
    ids = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
    assert ids == [sent["internet_message_id"]]
    assert skips(stack, user_id) == []


def test_a_delta_reset_resyncs_what_was_dropped_but_never_mail_from_before_a_reconnect(
    stack: Stack, user_id: str
) -> None:
    """CONTRACT.md section 7: 410 Gone means start over; R8 holds across it (the restart is a filtered round)."""
    mailbox = stack.new_mailbox("reset")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    [connection] = stack.services.connections.for_user(user_id)
    scheduled = CatchupRequest(
        user_id=user_id,
        connection_id=connection.connection_id,
        reason="scheduled",
        requested_at=stack.services.clock.now(),
    )
    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": connection.connection_id}
    )
    during = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="gap")
    stack.settle()
    reconnect_a_second_later(stack, user_id, mailbox)
    stack.settle()
    catch_up(asked_now(scheduled, stack), stack.services)  # rounds from the reconnect time: the cursors hold deltaLinks
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        dropped = deliver(stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], body_text="x")
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    stack.mail_world("POST", f"mail/{mailbox}/delta/expire")  # Graph drops its delta tokens: 410 next time
    tally = catch_up(asked_now(scheduled, stack), stack.services)
    assert tally["resets"] == 2  # Inbox and Sent Items
    ids = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
    assert ids == [sent["internet_message_id"], dropped["internetMessageId"]]
    assert during["internetMessageId"] not in ids
