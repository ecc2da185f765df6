"""A shared mailbox's subscription when sign-ins, disconnects, renewals and Graph's failures meet (issue 11, item 1).

The mailbox has one subscription at Graph, shared by its connections (R1): whatever order a sign-in, the last
disconnect, a renewal and a refusal from Graph happen in, a mailbox someone syncs ends with a live subscription
and one nobody syncs with none (R8). Each test forces one interleaving by running the other party's step from
inside a step of the first (a patched function of the module under test), then asserts what Graph holds and what
the users see.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from sync_core import connect as connect_module
from sync_core import mailbox as mailbox_module
from sync_core import names, upkeep, workers
from sync_core.connect import DisconnectRequest, disconnect
from sync_core.upkeep import RENEW, schedule_renewals
from tests.integration.conftest import Stack, refusing, wait_until
from tests.integration.test_shared_mailbox import (
    join,
    live_subscriptions_of,
    no_scheduled_timers,  # noqa: F401 (the fixture pytestmark uses)
    reply_to,
    settle_all,
    subscription_requests,
    thread_texts,
    wait_synced,
)

# Timers fire only when a test runs them (a scheduled renewal or catch-up would hide what a test looks for).
pytestmark = pytest.mark.usefixtures("no_scheduled_timers")


def leave(stack: Stack, user_id: str, connection_id: str) -> None:
    """The user disconnects the connection in Enrollio."""
    disconnect(DisconnectRequest(user_id=user_id, connection_id=connection_id), stack.services)


def mailbox_id(stack: Stack, address: str) -> str:
    box = stack.world.mailbox(address)
    assert box is not None
    return box.id


def drop_at_graph(stack: Stack, subscription_id: str) -> None:
    """Graph forgets the subscription without telling us (an expiry whose lifecycle event was lost)."""
    subscriptions = stack.emulator.subscriptions
    with subscriptions._lock:
        del subscriptions._subs[subscription_id]


# -- finding 1: a sign-in beside a member, after Graph dropped the mailbox's subscription -------------------------


def test_a_refused_sign_in_after_graph_dropped_the_subscription_leaves_it_to_the_next_renewal_run(stack: Stack) -> None:
    address = stack.new_mailbox("drop.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)
    [lost] = live_subscriptions_of(stack, box)
    drop_at_graph(stack, lost.id)

    with refusing(), pytest.raises(RuntimeError, match="subscription_failed"):  # renewed: 404; created: refused
        stack.connect("ben-refused", address)
    assert live_subscriptions_of(stack, box) == []

    # The next hourly renewal run finds the mailbox and re-creates its subscription with Ana's token.
    queued = schedule_renewals(stack.services)
    assert lost.id in queued, queued
    wait_until(lambda: live_subscriptions_of(stack, box), what="a new subscription for Ana's mailbox")
    settle_all(stack)
    reply_to(stack, address, ana, "to Ana, after the re-creation")
    wait_synced(stack, ana, "to Ana, after the re-creation")


def test_a_sign_in_that_re_creates_the_dropped_subscription_catches_up_the_mailboxs_other_users(stack: Stack) -> None:
    address = stack.new_mailbox("gap.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)
    [lost] = live_subscriptions_of(stack, box)
    drop_at_graph(stack, lost.id)
    reply_to(stack, address, ana, "to Ana, while nothing was subscribed")
    settle_all(stack)
    assert not any("while nothing was subscribed" in text for text in thread_texts(stack, ana))

    join(stack, address, "ben")  # renews (404) and creates the mailbox's subscription anew
    assert len(live_subscriptions_of(stack, box)) == 1
    wait_synced(stack, ana, "to Ana, while nothing was subscribed")


# -- finding 2: the last disconnect racing a sign-in -------------------------------------------------------------


def test_a_user_reconnecting_while_the_last_user_disconnects_keeps_the_subscription(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben disconnected earlier and signs in again; Ana, the last user syncing, disconnects while Ben's sign-in is
    past its subscription and before its connection row says connected."""
    address = stack.new_mailbox("race.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    ben = join(stack, address, "ben")
    settle_all(stack)
    leave(stack, ben.user_id, ben.connection_id)
    original = connect_module.sent_items_folder
    left: list[bool] = []

    def ana_leaves_meanwhile(graph: Any, user_object_id: str) -> str:
        if not left:
            left.append(True)
            leave(stack, ana.user_id, ana.connection_id)
        return original(graph, user_object_id)

    monkeypatch.setattr(connect_module, "sent_items_folder", ana_leaves_meanwhile)
    assert stack.connect(ben.user_id, address)["outcome"] == "connected"
    assert left
    assert len(live_subscriptions_of(stack, box)) == 1, "Ben is connected, Graph holds no subscription"
    settle_all(stack)
    reply_to(stack, address, ben, "to Ben, after Ana left")
    wait_synced(stack, ben, "to Ben, after Ana left")


def test_a_new_user_signing_in_while_the_last_user_disconnects_keeps_a_subscription(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana, the only user, disconnects; Ben signs in between her look at the mailbox's users and her DELETE."""
    address = stack.new_mailbox("race2.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)
    original = mailbox_module._delete_at_graph
    joined: list[str] = []

    def ben_signs_in_meanwhile(graph: Any, subscription_id: str) -> None:
        if not joined:
            joined.append("")  # first: Ben's sign-in runs this function too
            joined[0] = stack.connect("ben-race", address)["outcome"]
        original(graph, subscription_id)

    monkeypatch.setattr(mailbox_module, "_delete_at_graph", ben_signs_in_meanwhile)
    leave(stack, ana.user_id, ana.connection_id)
    assert joined == ["connected"]
    assert len(live_subscriptions_of(stack, box)) == 1, "Ben is connected, Graph holds no subscription"


# -- finding 5: a sign-in that crashed half-way ------------------------------------------------------------------


def test_a_sign_in_that_crashed_half_way_does_not_keep_the_subscription_after_the_last_disconnect(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = stack.new_mailbox("ghost.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)

    def storage_blip(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("storage blip")

    monkeypatch.setattr(connect_module, "start_cursors", storage_blip)
    with pytest.raises(RuntimeError):
        stack.connect("ben-ghost", address)
    monkeypatch.undo()
    leave(stack, ana.user_id, ana.connection_id)
    assert live_subscriptions_of(stack, box) == [], "kept alive for a sign-in that never finished"


def test_a_member_row_left_by_a_killed_sign_in_stops_counting_once_its_sign_in_is_over(stack: Stack) -> None:
    """A host killed mid sign-in leaves its member row (nothing runs its clean-up): it counts as a sign-in under
    way only for as long as a sign-in can last."""
    address = stack.new_mailbox("killed.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)
    connection = stack.services.connections.get(ana.user_id, ana.connection_id)
    assert connection is not None
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    ghost = {"PartitionKey": connection.mailbox, "RowKey": "c-killed", "UserId": "ben-killed", "JoinedAt": an_hour_ago}
    stack.services.storage.tables.get_table_client(names.TABLE_MAILBOXES).upsert_entity(ghost)
    leave(stack, ana.user_id, ana.connection_id)
    assert live_subscriptions_of(stack, box) == []
    assert stack.services.mailboxes.members(connection.mailbox) == []  # the stale row is cleaned up too


# -- finding 6: two first sign-ins at once -----------------------------------------------------------------------


def _first_sign_ins_at_once(stack: Stack, address: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Ana's create is answered 201 and Ben's sign-in runs whole before Ana's records it; their connection ids."""
    original = mailbox_module._recorded
    ben: list[str] = []

    def ben_signs_in_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not ben:
            ben.append("")
            ben[0] = stack.connect("ben-twin", address)["connection_id"]
        return original(*args, **kwargs)

    monkeypatch.setattr(mailbox_module, "_recorded", ben_signs_in_meanwhile)
    ana = stack.connect("ana-twin", address)["connection_id"]
    monkeypatch.undo()
    return ana, ben[0]


def test_two_first_sign_ins_at_once_leave_the_mailbox_on_its_live_subscription(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = stack.new_mailbox("twin.desk")
    box = mailbox_id(stack, address)
    ana_cid, _ = _first_sign_ins_at_once(stack, address, monkeypatch)
    [live] = live_subscriptions_of(stack, box)
    listed = stack.enrollio.call("GET", "/api/users/ana-twin/connections").json()["connections"]
    [ana] = [c for c in listed if c["connection_id"] == ana_cid]
    assert ana["subscription_expires_at"] is not None
    assert abs(dt.datetime.fromisoformat(ana["subscription_expires_at"]) - live.expires_at) < dt.timedelta(seconds=1)
    # This mailbox's rows only: Azurite is shared with the other modules' tests (their emulators are gone).
    recorded = [s.subscription_id for s in stack.services.subscriptions.all() if s.mailbox.endswith(box.lower())]
    assert live.id in recorded and len([s for s in recorded if not stack.emulator.subscriptions.get(s)]) == 0


def test_two_first_sign_ins_at_once_then_both_disconnect_leave_nothing_at_graph(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = stack.new_mailbox("twin2.desk")
    box = mailbox_id(stack, address)
    ana_cid, ben_cid = _first_sign_ins_at_once(stack, address, monkeypatch)
    leave(stack, "ana-twin", ana_cid)
    assert len(live_subscriptions_of(stack, box)) == 1  # Ben still syncs
    leave(stack, "ben-twin", ben_cid)
    assert live_subscriptions_of(stack, box) == [], "both users left; a subscription is still alive at Graph"


# -- finding 7: a renewal during a Graph outage ------------------------------------------------------------------


def test_a_renewal_during_a_graph_outage_waits_it_out_instead_of_failing_toward_poison(stack: Stack) -> None:
    address = stack.new_mailbox("outage.desk")
    box = mailbox_id(stack, address)
    join(stack, address, "ana")
    settle_all(stack)
    [subscription] = live_subscriptions_of(stack, box)
    renewal = json.dumps({"subscription_id": subscription.id, "event": RENEW})
    queue = stack.services.storage.queue(names.QUEUE_LIFECYCLE)
    stack.emulator.faults.configure(
        fail_paths={"/subscriptions/": {"status": 503, "method": "PATCH"}}, retry_after_seconds=30
    )
    try:
        # What the lifecycle worker does with one delivery of the event (the host would retry a raise every 10 s
        # and poison it after 5): it answers, and the event comes back after Graph's Retry-After.
        outcome = workers.run_lifecycle(renewal, stack.services)
    finally:
        stack.emulator.faults.reset()
    assert "again in" in outcome, outcome
    assert queue.get_queue_properties().approximate_message_count == 1
    assert list(queue.receive_messages()) == []  # not visible before Graph's Retry-After
    queue.clear_messages()
    since = time.time()
    workers.run_lifecycle(renewal, stack.services)  # Graph is back
    assert subscription_requests(stack, since) == ["PATCH /subscriptions/{id} 200"]


def test_a_renewal_that_keeps_failing_is_dropped_for_the_next_timer_run_not_poisoned(stack: Stack) -> None:
    address = stack.new_mailbox("outage2.desk")
    box = mailbox_id(stack, address)
    join(stack, address, "ana")
    settle_all(stack)
    [subscription] = live_subscriptions_of(stack, box)
    last_try = {"subscription_id": subscription.id, "event": RENEW, "attempt": workers.MAX_ATTEMPTS - 1}
    queue = stack.services.storage.queue(names.QUEUE_LIFECYCLE)
    stack.emulator.faults.configure(fail_paths={"/subscriptions/": {"status": 503, "method": "PATCH"}})
    try:
        outcome = workers.run_lifecycle(json.dumps(last_try), stack.services)
    finally:
        stack.emulator.faults.reset()
    assert "next renewal run" in outcome, outcome
    assert queue.get_queue_properties().approximate_message_count == 0
    assert stack.services.subscriptions.get(subscription.id) is not None  # still due: the timer queues it again


# -- finding 8: a renewal in flight while the last user disconnects ----------------------------------------------


def test_a_renewal_in_flight_does_not_re_create_the_subscription_of_a_mailbox_its_last_user_left(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = stack.new_mailbox("inflight.desk")
    box = mailbox_id(stack, address)
    ana = join(stack, address, "ana")
    settle_all(stack)
    [subscription] = live_subscriptions_of(stack, box)
    original = upkeep.renew_subscription

    def ana_leaves_meanwhile(graph: Any, subscription: Any, services: Any) -> Any:
        graph._token()  # the worker holds Ana's token already
        leave(stack, ana.user_id, ana.connection_id)
        return original(graph, subscription, services)

    monkeypatch.setattr(upkeep, "renew_subscription", ana_leaves_meanwhile)
    since = time.time()
    report = upkeep.handle_lifecycle(json.dumps({"subscription_id": subscription.id, "event": RENEW}), stack.services)
    assert live_subscriptions_of(stack, box) == [], (report, subscription_requests(stack, since))
    connection = stack.services.connections.get(ana.user_id, ana.connection_id)
    assert connection is not None
    assert [s for s in stack.services.subscriptions.all() if s.mailbox == connection.mailbox] == []
