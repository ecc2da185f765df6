"""Two Enrollio users on one mailbox (a shared front-desk account, R1), end to end (issue 11, item 1).

Graph allows one subscription of this app per mailbox (a second is refused with 409, CONTRACT.md section 1.1), so
the mailbox has one, shared by its connections: each user's threads keep syncing through renewals, every lifecycle
event and the other user's disconnect. What is asserted is what the users and Graph see: the threads' messages
through Enrollio's read API, the connections' status, the subscriptions alive at the emulator and the requests it
served.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from devtools.emulator.notifier import DeliveryFaults
from devtools.emulator.subscriptions_model import Subscription as GraphSubscription
from sync_core import names
from tests.integration.conftest import Stack, wait_until

RENEWAL_TIMER = "renew_subscriptions"


@dataclass
class Member:
    user_id: str
    connection_id: str
    contact: str
    sent: dict[str, Any]  # the answer to the thread's first email, sent from Enrollio

    @property
    def thread_id(self) -> str:
        return str(self.sent["thread_id"])


@dataclass
class SharedMailbox:
    address: str
    mailbox_id: str
    first: Member  # connected first
    second: Member  # connected the same mailbox afterwards


def send_first_email(stack: Stack, user_id: str, contact: str) -> dict[str, Any]:
    body = {
        "user_id": user_id,
        "account_id": "front-desk",
        "kind": "individual",
        "contact": {"email": contact},
        "subject": f"Trial class for {contact.split('@')[0]}",
        "html": "<p>See you Monday!</p>",
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 200, response.text
    return dict(response.json())


def join(stack: Stack, address: str, name: str) -> Member:
    user_id = f"{name}-{uuid.uuid4().hex[:8]}"
    connection_id = stack.connect(user_id, address)["connection_id"]
    contact = f"{name}.contact.{uuid.uuid4().hex[:6]}@home.example"
    return Member(user_id, connection_id, contact, send_first_email(stack, user_id, contact))


@pytest.fixture
def shared(stack: Stack) -> SharedMailbox:
    address = stack.new_mailbox("front.desk")
    mailbox = stack.world.mailbox(address)
    assert mailbox is not None
    first = join(stack, address, "ana")
    second = join(stack, address, "ben")
    settle_all(stack)
    return SharedMailbox(address, mailbox.id, first, second)


def reply(stack: Stack, shared: SharedMailbox, member: Member, text: str) -> str:
    """The member's contact replies in the member's thread; the reply's Graph id."""
    return reply_to(stack, shared.address, member, text)


def reply_to(stack: Stack, address: str, member: Member, text: str) -> str:
    spec = {
        "from": member.contact,
        "subject": "RE: Trial class",
        "in_reply_to": member.sent["internet_message_id"],
        "body_text": text,
    }
    return str(stack.mail_world("POST", f"mail/{address}/deliver", spec)["id"])


def thread_texts(stack: Stack, member: Member) -> list[str]:
    response = stack.enrollio.call(
        "GET", f"/api/threads/{member.thread_id}/messages", params={"user_id": member.user_id}
    )
    assert response.status_code == 200, response.text
    return [str(m["body"]["content"]) for m in response.json()["messages"]]


def wait_synced(stack: Stack, member: Member, *texts: str) -> None:
    def synced() -> bool:
        stack.flush()
        have = thread_texts(stack, member)
        return all(any(text in body for body in have) for text in texts)

    wait_until(synced, what=f"{texts} in {member.user_id}'s thread")


def live_subscriptions_of(stack: Stack, mailbox_id: str) -> list[GraphSubscription]:
    """The subscriptions Graph (the emulator) holds alive for the mailbox."""
    return stack.emulator.subscriptions.of_mailbox(mailbox_id)


def live_subscriptions(stack: Stack, shared: SharedMailbox) -> list[GraphSubscription]:
    return live_subscriptions_of(stack, shared.mailbox_id)


def subscription_requests(stack: Stack, since: float) -> list[str]:
    return [
        f"{e.route} {e.status}" for e in stack.emulator.log.snapshot() if e.at >= since and "subscriptions" in e.route
    ]


def settle_all(stack: Stack) -> None:
    """Every notification delivered and every queued reference, lifecycle event and catch-up handled."""
    stack.settle()
    for name in (names.QUEUE_LIFECYCLE, names.QUEUE_CATCHUP, names.QUEUE_INBOUND):
        queue = stack.services.storage.queue(name)
        wait_until(lambda q=queue: q.get_queue_properties().approximate_message_count == 0, what=f"queue {name}")


def status(stack: Stack, member: Member) -> str:
    listed = stack.enrollio.call("GET", f"/api/users/{member.user_id}/connections").json()["connections"]
    return str(next(c for c in listed if c["connection_id"] == member.connection_id)["status"])


def run_timer(stack: Stack, name: str) -> None:
    """One run of the app's timer function ``name``, as the host fires it on its schedule."""
    [timer] = [t for t in stack.host.timers if t.function.function_name == name]
    timer.function.user_function(TimerRequest(past_due=False))


@pytest.fixture
def no_scheduled_timers(stack: Stack) -> Iterator[None]:
    """Timers fire only when a test runs them (a scheduled catch-up would hide what a lifecycle event missed)."""
    for timer in stack.host.timers:
        timer.stop()
    yield


def test_the_second_user_joins_the_mailboxs_subscription_and_both_users_threads_sync(
    stack: Stack, shared: SharedMailbox
) -> None:
    # One subscription at Graph, ours, serving both connections.
    [subscription] = live_subscriptions(stack, shared)
    assert stack.services.subscriptions.get(subscription.id) is not None

    # A third sign-in to the mailbox (the first user again) joins it too: no create, no delete at Graph.
    since = time.time()
    stack.connect(shared.first.user_id, shared.address)
    assert [s.id for s in live_subscriptions(stack, shared)] == [subscription.id]
    requests = subscription_requests(stack, since)
    assert not [r for r in requests if r.startswith(("POST /subscriptions", "DELETE", "GET /subscriptions "))], requests
    settle_all(stack)  # the sign-ins' catch-ups fetch what they find; the replies below are what is counted

    stack.emulator.log.clear()
    first_reply = reply(stack, shared, shared.first, "Ana's contact answers")
    second_reply = reply(stack, shared, shared.second, "Ben's contact answers")
    wait_synced(stack, shared.first, "Ana's contact answers")
    wait_synced(stack, shared.second, "Ben's contact answers")
    stack.settle()
    # Each reply is in its own user's thread only.
    assert not any("Ben's" in text for text in thread_texts(stack, shared.first))
    assert not any("Ana's" in text for text in thread_texts(stack, shared.second))
    # One notification per message, fetched once for the mailbox, decided for each of its connections.
    fetched = [
        e.path.rsplit("/", 1)[-1]
        for e in stack.emulator.log.snapshot()
        if e.mailbox_id == shared.mailbox_id and e.route == "GET /users/{id}/messages/{id}"
    ]
    assert sorted(fetched) == sorted([first_reply, second_reply])


def test_both_users_keep_syncing_through_the_renewal_timer(
    stack: Stack, shared: SharedMailbox, no_scheduled_timers: None
) -> None:
    [subscription] = live_subscriptions(stack, shared)
    stored = stack.services.subscriptions.get(subscription.id)
    assert stored is not None
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)  # inside the renewal window
    stack.services.subscriptions.save(replace(stored, expires_at=due))

    since = time.time()
    run_timer(stack, RENEWAL_TIMER)
    wait_until(
        lambda: "PATCH /subscriptions/{id} 200" in subscription_requests(stack, since), what="the renewal at Graph"
    )
    stack.settle()
    [renewed] = live_subscriptions(stack, shared)
    assert renewed.id == subscription.id
    assert subscription_requests(stack, since) == ["PATCH /subscriptions/{id} 200"]  # once for the mailbox
    # A fresh lifetime (spread over its last three days: renewals of mailboxes connected together spread out).
    assert renewed.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=4)

    def recorded() -> bool:  # the expiry Graph granted, in the row
        row = stack.services.subscriptions.get(subscription.id)
        return row is not None and abs(row.expires_at - renewed.expires_at) < dt.timedelta(seconds=1)

    wait_until(recorded, what="the renewed expiry recorded")

    reply(stack, shared, shared.first, "after the renewal, to Ana")
    reply(stack, shared, shared.second, "after the renewal, to Ben")
    wait_synced(stack, shared.first, "after the renewal, to Ana")
    wait_synced(stack, shared.second, "after the renewal, to Ben")


def test_reauthorization_renews_once_and_catches_up_both_users(
    stack: Stack, shared: SharedMailbox, no_scheduled_timers: None
) -> None:
    [subscription] = live_subscriptions(stack, shared)
    # Graph pauses notifications before it says so (CONTRACT.md 3.2): replies of that time are never notified.
    stack.emulator.subscriptions.pause(subscription.id)
    reply(stack, shared, shared.first, "while paused, to Ana")
    reply(stack, shared, shared.second, "while paused, to Ben")
    stack.settle()
    assert not any("while paused" in text for text in thread_texts(stack, shared.first))

    since = time.time()
    stack.emulator.subscriptions.lifecycle(subscription.id, "reauthorizationRequired")
    wait_synced(stack, shared.first, "while paused, to Ana")
    wait_synced(stack, shared.second, "while paused, to Ben")
    stack.settle()
    assert subscription_requests(stack, since) == ["PATCH /subscriptions/{id} 200"]
    assert [s.id for s in live_subscriptions(stack, shared)] == [subscription.id]

    reply(stack, shared, shared.first, "after reauthorizing, to Ana")
    reply(stack, shared, shared.second, "after reauthorizing, to Ben")
    wait_synced(stack, shared.first, "after reauthorizing, to Ana")
    wait_synced(stack, shared.second, "after reauthorizing, to Ben")


def test_a_removed_subscription_is_recreated_once_and_both_users_keep_syncing(
    stack: Stack, shared: SharedMailbox, no_scheduled_timers: None
) -> None:
    [subscription] = live_subscriptions(stack, shared)
    since = time.time()
    stack.emulator.subscriptions.lifecycle(subscription.id, "subscriptionRemoved")
    wait_until(lambda: live_subscriptions(stack, shared), what="a new subscription for the mailbox")
    stack.settle()
    [recreated] = live_subscriptions(stack, shared)
    assert recreated.id != subscription.id
    assert [r for r in subscription_requests(stack, since) if r.startswith("POST")] == ["POST /subscriptions 201"]

    reply(stack, shared, shared.first, "after the re-creation, to Ana")
    reply(stack, shared, shared.second, "after the re-creation, to Ben")
    wait_synced(stack, shared.first, "after the re-creation, to Ana")
    wait_synced(stack, shared.second, "after the re-creation, to Ben")


def test_missed_notifications_are_caught_up_for_both_users(
    stack: Stack, shared: SharedMailbox, no_scheduled_timers: None
) -> None:
    [subscription] = live_subscriptions(stack, shared)
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        reply(stack, shared, shared.first, "never notified, to Ana")
        reply(stack, shared, shared.second, "never notified, to Ben")
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    stack.settle()
    assert not any("never notified" in text for text in thread_texts(stack, shared.second))

    stack.emulator.subscriptions.lifecycle(subscription.id, "missed")
    wait_synced(stack, shared.first, "never notified, to Ana")
    wait_synced(stack, shared.second, "never notified, to Ben")


def test_one_users_disconnect_keeps_the_other_syncing_and_the_last_one_deletes_the_subscription(
    stack: Stack, shared: SharedMailbox
) -> None:
    [subscription] = live_subscriptions(stack, shared)
    leaving, staying = shared.second, shared.first
    response = stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": leaving.user_id, "connection_id": leaving.connection_id}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "disconnected"
    assert [s.id for s in live_subscriptions(stack, shared)] == [subscription.id]  # the other user still needs it
    assert status(stack, staying) == "active"

    reply(stack, shared, staying, "after Ben left, to Ana")
    reply(stack, shared, leaving, "after Ben left, to Ben")
    wait_synced(stack, staying, "after Ben left, to Ana")
    stack.settle()
    assert not any("after Ben left" in text for text in thread_texts(stack, leaving))  # R8

    stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": staying.user_id, "connection_id": staying.connection_id}
    )
    assert live_subscriptions(stack, shared) == []  # nobody syncs the mailbox any more


def test_a_member_whose_grant_is_lost_is_marked_and_the_others_token_keeps_the_mailbox_going(
    stack: Stack, shared: SharedMailbox, no_scheduled_timers: None
) -> None:
    # The member tried first for the mailbox (by connection id) loses its grant; the other keeps its own.
    lost, kept = sorted((shared.first, shared.second), key=lambda m: m.connection_id)
    stack.services.token_caches.delete(lost.connection_id)
    [subscription] = live_subscriptions(stack, shared)
    stored = stack.services.subscriptions.get(subscription.id)
    assert stored is not None
    stack.services.subscriptions.save(replace(stored, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))

    since = time.time()
    run_timer(stack, RENEWAL_TIMER)
    wait_until(
        lambda: "PATCH /subscriptions/{id} 200" in subscription_requests(stack, since), what="the renewal at Graph"
    )
    wait_until(lambda: status(stack, lost) == "needs_reconnect", what="the lost grant to show")
    assert status(stack, kept) == "active"

    reply(stack, shared, kept, "with one grant lost")
    wait_synced(stack, kept, "with one grant lost")
