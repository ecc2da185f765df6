"""Sending from Enrollio (issue 4): routing through the HTTP function, Outlook sends on the emulator,
thread tracking, attachments, idempotency, Update Email and disconnect."""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.integration.conftest import Stack


def sent_items(stack: Stack, address: str) -> list[dict[str, Any]]:
    response = stack.control().get(
        f"{stack.emulator.base_url}/_emulator/mail/{address}/messages", params={"folder": "sentitems"}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def outbound(stack: Stack, address: str) -> list[dict[str, Any]]:
    response = stack.control().get(f"{stack.emulator.base_url}/_emulator/mail/outbound", params={"mailbox": address})
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def email(user_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"id": "c-1", "email": "parent@home.example", "name": "Pat Parent"},
        "subject": "Welcome to the studio",
        "html": "<p>Hello Pat, classes start Monday.</p>",
    }
    return {**body, **overrides}


def send(stack: Stack, body: dict[str, Any], key: str | None = None) -> requests.Response:
    return stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


# -- routing, through the HTTP function ------------------------------------------------------------------------


def _setup(stack: Stack, user_id: str, state: str) -> dict[str, str]:
    """Give ``user_id`` connections in ``state``; the addresses by role."""
    if state == "none":
        return {}
    first = stack.new_mailbox("route.first")
    cid = stack.connect(user_id, first)["connection_id"]
    if state == "updated":
        second = stack.new_mailbox("route.second")
        stack.connect(user_id, second)
        return {"first": first, "active": second}
    if state == "needs_reconnect":
        connection = stack.services.connections.get(user_id, cid)
        assert connection is not None
        from sync_core.mailbox import mark_grant_lost

        mark_grant_lost(connection, "invalid_grant: revoked", stack.services)
    if state == "disconnected":
        assert stack.enrollio.call(
            "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid}
        ).ok
    return {"active": first, "first": first}


ROUTES = [
    # (connections, kind, From field: a role or a literal, expected: "outlook:<role>" or the account reason)
    ("connected", "workflow", "active", "workflow_uses_account_provider"),
    ("connected", "bulk", "ACTIVE", "outlook:active"),
    ("connected", "bulk", "", "bulk_from_blank"),
    ("connected", "bulk", "office@school.example", "bulk_from_not_connected_address"),
    ("updated", "bulk", "first", "bulk_from_not_connected_address"),
    ("needs_reconnect", "bulk", "active", "connection_needs_reconnect"),
    ("connected", "individual", None, "outlook:active"),
    ("updated", "individual", None, "outlook:active"),
    ("none", "individual", None, "no_connected_outlook"),
    ("needs_reconnect", "individual", None, "connection_needs_reconnect"),
    ("disconnected", "individual", None, "no_connected_outlook"),
]


@pytest.mark.parametrize(
    ("state", "kind", "from_field", "expected"), ROUTES, ids=[f"{r[0]}-{r[1]}-{r[3]}" for r in ROUTES]
)
def test_routing_through_the_send_function(
    stack: Stack, user_id: str, state: str, kind: str, from_field: str | None, expected: str
) -> None:
    addresses = _setup(stack, user_id, state)
    if from_field is not None:
        role = from_field.lower()
        from_field = addresses.get(role, from_field)
        if from_field and role == "active" and from_field != "ACTIVE":
            from_field = f"  {from_field.upper()} "  # case and spaces do not matter
    response = send(stack, email(user_id, kind=kind, from_field=from_field))
    assert response.status_code == 200, response.text
    answer = response.json()
    if expected.startswith("outlook:"):
        assert answer["route"] == "outlook"
        assert answer["from"] == addresses[expected.split(":")[1]]
    else:
        assert answer == {"route": "account_provider", "reason": expected}


THREAD_ROUTES = [
    # (connections, kind, From field: a role, a "Name <role>" form or a literal, expected) for a reply in a thread
    # started from the first address. R7's rule first, then the thread: a bulk email's From must be the address
    # the reply would go out from (its thread's mailbox).
    ("connected", "bulk", "first", "outlook:first"),
    ("connected", "bulk", "Alex Doe <first>", "outlook:first"),
    ("connected", "bulk", "", "bulk_from_blank"),
    ("connected", "bulk", "office@school.example", "bulk_from_not_connected_address"),
    ("updated", "bulk", "first", "outlook:first"),
    ("updated", "bulk", "active", "bulk_from_not_thread_address"),  # connected, but not the thread's mailbox's
    ("connected", "workflow", "first", "workflow_uses_account_provider"),
    ("updated", "individual", None, "outlook:first"),
]


@pytest.mark.parametrize(
    ("state", "kind", "from_field", "expected"),
    THREAD_ROUTES,
    ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}" for r in THREAD_ROUTES],
)
def test_routing_of_replies_in_a_thread_through_the_send_function(
    stack: Stack, user_id: str, state: str, kind: str, from_field: str | None, expected: str
) -> None:
    first = stack.new_mailbox("thread.first")
    stack.connect(user_id, first)
    started = send(stack, email(user_id)).json()
    addresses = {"first": first, "active": first}
    if state == "updated":
        addresses["active"] = stack.new_mailbox("thread.second")
        stack.connect(user_id, addresses["active"])
    if from_field is not None:
        for role, address in addresses.items():
            from_field = from_field.replace(role, f" {address.upper()} " if "<" not in from_field else address)
    response = send(stack, email(user_id, kind=kind, from_field=from_field, thread_id=started["thread_id"]))
    assert response.status_code == 200, response.text
    answer = response.json()
    if expected.startswith("outlook:"):
        assert (answer["route"], answer["from"]) == ("outlook", addresses[expected.split(":")[1]])
        assert answer["conversation_id"] == started["conversation_id"]
    else:
        assert answer == {"route": "account_provider", "reason": expected}


def test_a_bulk_from_in_the_name_and_address_form_matches_the_connected_address(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("display.name")
    stack.connect(user_id, address)
    for from_field in (f'"Doe, Alex" <{address.upper()}>', f"Alex Doe <{address}>"):
        answer = send(stack, email(user_id, kind="bulk", from_field=from_field)).json()
        assert (answer["route"], answer["from"]) == ("outlook", address)
    other = send(stack, email(user_id, kind="bulk", from_field=f"{address} <office@school.example>")).json()
    assert other == {"route": "account_provider", "reason": "bulk_from_not_connected_address"}


# -- sending through Outlook ---------------------------------------------------------------------------------------


def test_an_individual_email_goes_out_from_outlook_and_starts_a_tracked_thread(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("sender")
    stack.connect(user_id, address)
    response = send(stack, email(user_id))
    assert response.status_code == 200, response.text
    answer = response.json()
    [copy] = sent_items(stack, address)
    assert copy["id"] == answer["message_id"]  # the immutable id survives the move to Sent Items
    assert copy["conversationId"] == answer["conversation_id"]
    assert copy["internetMessageId"] == answer["internet_message_id"]
    [delivery] = outbound(stack, address)
    assert "parent@home.example" in str(delivery)
    messages = stack.enrollio.call(
        "GET", f"/api/threads/{answer['thread_id']}/messages", params={"user_id": user_id}
    ).json()
    assert messages["conversation_id"] == answer["conversation_id"]
    assert [(m["direction"], m["origin"], m["from"]) for m in messages["messages"]] == [
        ("outbound", "enrollio", address)
    ]


def test_a_reply_in_the_thread_uses_create_reply_and_stays_in_the_conversation(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("replier")
    stack.connect(user_id, address)
    first = send(stack, email(user_id)).json()
    stack.emulator.log.clear()
    reply = send(stack, email(user_id, thread_id=first["thread_id"], html="<p>One more thing</p>"))
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["conversation_id"] == first["conversation_id"]
    assert answer["thread_id"] == first["thread_id"]
    assert any(e.route.endswith("/createReply") for e in stack.emulator.log.snapshot())
    assert len(sent_items(stack, address)) == 2


def test_an_attachment_that_is_not_base64_is_a_400_naming_it_and_nothing_is_sent(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("big")
    stack.connect(user_id, address)
    fine = base64.b64encode(b"y" * 1024).decode()
    body = email(
        user_id,
        attachments=[
            {"name": "small.pdf", "content_type": "application/pdf", "content_base64": fine},
            {"name": "scan.pdf", "content_type": "application/pdf", "content_base64": fine[:-1]},
        ],
    )
    stack.emulator.log.clear()
    response = send(stack, body)
    assert response.status_code == 400
    assert "scan.pdf" in response.json()["message"]
    assert response.json()["fields"] == [{"field": "attachments.1.content_base64"}]
    assert sent_items(stack, address) == []
    mailbox_id = stack.world.mailbox(address).id  # type: ignore[union-attr]
    assert not [e.route for e in stack.emulator.log.snapshot() if e.mailbox_id == mailbox_id]  # no Graph call at all


def test_an_attachment_within_the_cap_is_sent_and_stored(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("attach")
    stack.connect(user_id, address)
    data = bytes(range(256)) * 4096  # 1 MiB
    body = email(
        user_id,
        attachments=[
            {
                "name": "timetable.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(data).decode(),
            }
        ],
    )
    answer = send(stack, body).json()
    thread = stack.enrollio.call(
        "GET", f"/api/threads/{answer['thread_id']}/messages", params={"user_id": user_id}
    ).json()
    [attachment] = thread["messages"][0]["attachments"]
    assert (attachment["name"], attachment["size"]) == ("timetable.pdf", len(data))
    download = stack.enrollio.call("GET", attachment["download"], params={"user_id": user_id})
    assert download.content == data


def test_a_retried_call_with_the_same_key_sends_once_and_answers_the_same(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("retry")
    stack.connect(user_id, address)
    key, body = uuid.uuid4().hex, email(user_id)
    first, second = send(stack, body, key), send(stack, body, key)
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(sent_items(stack, address)) == 1
    changed = send(stack, email(user_id, subject="Another subject"), key)
    assert changed.status_code == 409


def test_ten_concurrent_calls_with_one_key_send_exactly_once(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("concurrent")
    stack.connect(user_id, address)
    key, body = uuid.uuid4().hex, email(user_id)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: send(stack, body, key), range(10)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["message_id"] for a in answers}) == 1
    assert len(sent_items(stack, address)) == 1


def test_after_update_email_new_mail_uses_the_new_address_and_old_threads_the_old_one(
    stack: Stack, user_id: str
) -> None:
    old, new = stack.new_mailbox("switch.old"), stack.new_mailbox("switch.new")
    stack.connect(user_id, old)
    old_thread = send(stack, email(user_id)).json()
    stack.connect(user_id, new)
    fresh = send(stack, email(user_id, subject="From the new address")).json()
    reply = send(stack, email(user_id, thread_id=old_thread["thread_id"])).json()
    assert (fresh["from"], reply["from"]) == (new, old)
    assert reply["conversation_id"] == old_thread["conversation_id"]
    assert len(sent_items(stack, old)) == 2
    assert len(sent_items(stack, new)) == 1


def test_after_disconnect_individual_email_routes_to_the_account_provider(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("gone")
    cid = stack.connect(user_id, address)["connection_id"]
    thread = send(stack, email(user_id)).json()
    stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid})
    assert send(stack, email(user_id)).json() == {"route": "account_provider", "reason": "no_connected_outlook"}
    reply = send(stack, email(user_id, thread_id=thread["thread_id"])).json()
    assert reply == {"route": "account_provider", "reason": "connection_disconnected"}
    assert len(sent_items(stack, address)) == 1


def test_bad_requests_name_the_field_and_foreign_threads_are_403(stack: Stack, user_id: str) -> None:
    missing_key = stack.enrollio.call("POST", "/api/send", body=email(user_id))
    assert missing_key.status_code == 400
    assert missing_key.json()["fields"] == [{"field": "Idempotency-Key"}]
    bad = send(stack, {"user_id": user_id, "kind": "carrier-pigeon"})
    assert bad.status_code == 400
    assert {f["field"] for f in bad.json()["fields"]} >= {"account_id", "kind", "contact"}
    two_in_one = send(stack, email(user_id, cc=["office@school.example", "a,evil@x.io"]))  # not two recipients
    assert (two_in_one.status_code, [f["field"] for f in two_in_one.json()["fields"]]) == (400, ["cc.1"])
    owner = f"owner-{uuid.uuid4().hex[:6]}"
    stack.connect(owner, stack.new_mailbox("owner"))
    theirs = send(stack, email(owner)).json()
    stranger = send(stack, email(user_id, thread_id=theirs["thread_id"]))
    assert stranger.status_code == 403


def test_graph_throttling_past_the_budget_is_a_503_with_retry_after_and_nothing_sent(
    stack: Stack, user_id: str
) -> None:
    address = stack.new_mailbox("throttled")
    stack.connect(user_id, address)
    stack.emulator.faults.configure(fail_503_rate=1.0)
    try:
        response = send(stack, email(user_id))
    finally:
        stack.emulator.faults.reset()
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert sent_items(stack, address) == []
