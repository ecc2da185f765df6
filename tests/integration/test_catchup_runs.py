"""Catch-up at scale (issue 11, item 2): requests coalesce per connection, a round resumes from its saved nextLink
after running out of time, and a message already stored costs no GET."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devtools.emulator.notifier import DeliveryFaults
from sync_core import catchup, catchup_runs
from sync_core.adapters.catchup_runs import RunState, RunStore
from sync_core.adapters.ops_store import CursorStore
from sync_core.catchup import catch_up
from sync_core.catchup_queue import CatchupRequest
from sync_core.catchup_runs import Admission, RunEnd
from tests.integration.conftest import Stack, wait_until

CONTACT = "parent@home.example"


def start_thread(stack: Stack, user_id: str, mailbox: str) -> dict[str, Any]:
    stack.connect(user_id, mailbox)
    body = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": CONTACT, "name": "Pat Parent"},
        "subject": "Trial class on Monday",
        "html": "<p>See you Monday!</p>",
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 200, response.text
    return dict(response.json())


def reply(stack: Stack, mailbox: str, sent: dict[str, Any], text: str) -> dict[str, Any]:
    spec = {"from": CONTACT, "subject": "RE: Trial", "in_reply_to": sent["internet_message_id"], "body_text": text}
    return dict(stack.mail_world("POST", f"mail/{mailbox}/deliver", spec))


def request(stack: Stack, user_id: str, reason: str = "scheduled") -> CatchupRequest:
    [connection] = stack.services.connections.for_user(user_id)
    return CatchupRequest(
        user_id=user_id, connection_id=connection.connection_id, reason=reason, requested_at=stack.services.clock.now()
    )


def graph_requests(stack: Stack, mailbox: str, since: int) -> list[Any]:
    mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
    return [e for e in stack.emulator.log.snapshot()[since:] if e.mailbox_id == mailbox_id]


def delta_requests(entries: list[Any]) -> list[Any]:
    return [e for e in entries if e.route.endswith("/messages/delta")]


def stored_ids(stack: Stack, user_id: str, thread_id: str) -> list[str]:
    response = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id})
    return [m["internet_message_id"] for m in response.json()["messages"]]


def test_catch_up_requests_the_timer_stacked_coalesce_into_one_run(stack: Stack, user_id: str) -> None:
    """Three quarter-hour requests waiting in a backed-up queue: the first runs (one delta round per folder), the
    other two were asked before it started, so it covered them: dropped without a Graph request."""
    mailbox = stack.new_mailbox("stacked")
    start_thread(stack, user_id, mailbox)
    stack.settle()
    ticks = [request(stack, user_id) for _ in range(3)]
    mark = len(stack.emulator.log.snapshot())
    tallies = [catch_up(tick, stack.services) for tick in ticks]
    assert tallies[1] == tallies[2] == {"dropped: covered by a later run": 1}
    assert len(delta_requests(graph_requests(stack, mailbox, mark))) == 2  # Inbox and Sent Items, once each
    later = request(stack, user_id)  # the next tick, after the run: it runs
    assert "dropped: covered by a later run" not in catch_up(later, stack.services)


def test_a_request_during_a_run_is_dropped_and_the_run_asks_for_one_more_when_it_ends(
    stack: Stack, user_id: str
) -> None:
    """Another instance's run is under way: a ``missed`` arriving now is dropped (no second walk of the mailbox at
    once), and noted, so the run asks for one more run when it ends (mail of the missed notification may be on a
    page it had passed). A request asked before that run started needs no more run."""
    mailbox = stack.new_mailbox("inprogress")
    start_thread(stack, user_id, mailbox)
    stack.settle()
    earlier = request(stack, user_id)
    started = stack.services.clock.now()
    admission, claimed = catchup_runs.claim(request(stack, user_id), stack.services)  # the other instance's run
    assert admission is Admission.RUN and claimed is not None
    mark = len(stack.emulator.log.snapshot())
    assert catch_up(earlier, stack.services) == {"dropped: a run is in progress": 1}
    assert not catchup_runs.end(earlier.connection_id, claimed, started, RunEnd.COMPLETED, stack.services)

    admission, claimed = catchup_runs.claim(request(stack, user_id), stack.services)
    started = stack.services.clock.now()
    assert claimed is not None
    missed = request(stack, user_id, "missed")
    assert catch_up(missed, stack.services) == {"dropped: a run is in progress": 1}
    assert graph_requests(stack, mailbox, mark) == []
    assert catchup_runs.end(missed.connection_id, claimed, started, RunEnd.COMPLETED, stack.services)


def test_the_retry_of_a_run_that_died_takes_it_over_at_once(stack: Stack, user_id: str) -> None:
    """The instance running a catch-up was killed: the queue's retry of that very request must not wait out the
    claim (five minutes) as if another run were under way."""
    mailbox = stack.new_mailbox("died")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    dying = request(stack, user_id)
    _, claimed = catchup_runs.claim(dying, stack.services)  # ... and the instance dies here
    assert claimed is not None
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        late = reply(stack, mailbox, sent, "while the run was dying")
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    tally = catch_up(dying, stack.services)  # the retry
    assert tally.get("stored") == 1, tally
    assert stored_ids(stack, user_id, sent["thread_id"]) == [sent["internet_message_id"], late["internetMessageId"]]


def test_a_run_out_of_time_saves_its_place_and_the_next_run_goes_on_from_there(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge mailbox's round does not fit in one function run: the run stops after a page once its time is spent
    and asks for another, which follows the saved nextLink; no page is asked for twice, nothing is lost."""
    monkeypatch.setattr(catchup, "PAGE_SIZE", "odata.maxpagesize=3")
    mailbox = stack.new_mailbox("resume")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        replies = [reply(stack, mailbox, sent, f"reply {n}") for n in range(8)]
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    mark = len(stack.emulator.log.snapshot())
    tally = catch_up(request(stack, user_id), stack.services, budget=0.0)  # out of time after its first page
    assert (tally.get("paused"), tally.get("re-queued: continue"), tally.get("stored")) == (1, 1, 3), tally

    # The host's catch-up worker takes the "continue" request and finishes the round.
    def all_stored() -> list[str] | None:
        ids = stored_ids(stack, user_id, sent["thread_id"])
        return ids if len(ids) == 9 else None

    ids = wait_until(all_stored, what="every reply stored")
    assert sorted(ids[1:]) == sorted(r["internetMessageId"] for r in replies)
    rounds = delta_requests(graph_requests(stack, mailbox, mark))
    inbox = [e.query for e in rounds if "sentitems" not in e.path]
    assert len(inbox) == len(set(inbox)) >= 3  # page after page, none again: 8 replies, 3 a page
    assert sum("$select" in q for q in inbox) <= 1  # never started over


def test_a_catch_up_fetches_no_message_it_has_stored(stack: Stack, user_id: str) -> None:
    """Reading three synced replies in Outlook changes them: delta reports them again. Each is in its thread
    already (its internetMessageId says so), so the round costs its delta pages and no GET of a message."""
    mailbox = stack.new_mailbox("stored")
    sent = start_thread(stack, user_id, mailbox)
    replies = [reply(stack, mailbox, sent, f"reply {n}") for n in range(3)]
    stack.settle()
    wait_until(lambda: len(stored_ids(stack, user_id, sent["thread_id"])) == 4 or None, what="replies synced")
    catch_up(request(stack, user_id), stack.services)  # the cursors are past them
    for r in replies:
        stack.mail_world("PATCH", f"mail/{mailbox}/messages/{r['id']}", {"is_read": True})
    mark = len(stack.emulator.log.snapshot())
    tally = catch_up(request(stack, user_id), stack.services)
    assert tally.get("already_stored") == 3, tally
    fetched = [e.route for e in graph_requests(stack, mailbox, mark) if not e.route.endswith("/messages/delta")]
    assert fetched == []
    assert len(stored_ids(stack, user_id, sent["thread_id"])) == 4


def test_disconnecting_forgets_the_connections_runs_with_its_cursors(stack: Stack, user_id: str) -> None:
    """A reconnect starts afresh (R8): no completed run of the old connection covers the new one's requests."""
    mailbox = stack.new_mailbox("forgotten")
    start_thread(stack, user_id, mailbox)
    stack.settle()
    first = request(stack, user_id)
    catch_up(first, stack.services)
    store = RunStore(stack.services.storage.tables)
    assert store.get(first.connection_id).completed_from is not None
    CursorStore(stack.services.storage.tables).forget(first.connection_id)
    assert store.get(first.connection_id) == RunState()  # no run, no interval: due at the next tick


def test_a_request_made_after_a_paused_round_started_is_not_covered_by_the_run_that_finishes_it(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round paused out of time and finished by a continuation run saw the mailbox as it was when the round
    started: a request made after that start (mail may have come since) must still run, not be dropped as covered
    because the continuation run started after it."""
    monkeypatch.setattr(catchup, "PAGE_SIZE", "odata.maxpagesize=3")
    mailbox = stack.new_mailbox("resume.covered")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        for n in range(8):
            reply(stack, mailbox, sent, f"reply {n}")
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    tally = catch_up(request(stack, user_id), stack.services, budget=0.0)  # pauses; the host runs the rest
    assert tally.get("paused") == 1, tally
    later = request(stack, user_id, reason="missed")  # after the round started, before it completes
    wait_until(lambda: len(stored_ids(stack, user_id, sent["thread_id"])) == 9 or None, what="every reply stored")
    [connection] = stack.services.connections.for_user(user_id)

    def completed() -> Any:
        state = RunStore(stack.services.storage.tables).get(connection.connection_id)
        return state if state.running_until is None and state.completed_from is not None else None

    state = wait_until(completed, what="the continuation run ended")
    assert catchup_runs.admit(later, state, stack.services.clock.now()) is Admission.RUN
