"""The scheduled catch-up adapts (issue 11, item 4): through the app's timer function and the host's catch-up
worker, a connection whose push misses nothing is not walked at every quarter hour, and is when its interval has
passed; a ``missed`` lifecycle event puts its interval back to 15 minutes."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from devtools.emulator.notifier import DeliveryFaults
from sync_core import catchup_schedule, names
from sync_core.adapters.catchup_runs import RunStore
from sync_core.clock import SystemClock
from sync_core.services import Services
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_catchup_runs import CONTACT, start_thread

TIMER = "schedule_catchups"


class LaterClock(SystemClock):
    def __init__(self, later: dt.timedelta) -> None:
        self.later = later

    def now(self) -> dt.datetime:
        return super().now() + self.later


@contextlib.contextmanager
def at(stack: Stack, minutes_later: float, spread_seconds: int = 0) -> Iterator[None]:
    """The app's functions run as if ``minutes_later`` had passed (only while the timer function runs: the
    worker that takes its requests, and Enrollio's signed calls, keep the real time). The offline stack's
    requests are not spread (``CATCHUP_SPREAD_SECONDS`` 0) unless ``spread_seconds`` says so."""
    [timer] = [t for t in stack.host.timers if t.function.function_name == TIMER]
    app_globals = timer.function.user_function.__globals__
    settings = stack.settings.model_copy(update={"catchup_spread_seconds": spread_seconds})
    later = Services(settings, LaterClock(dt.timedelta(minutes=minutes_later)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(app_globals, "services", lambda: later)
        yield


def tick(stack: Stack, minutes_later: float) -> None:
    """One run of the app's catch-up timer, as the host fires it, ``minutes_later`` from now; then every request
    it made is handled by the host's catch-up worker."""
    [timer] = [t for t in stack.host.timers if t.function.function_name == TIMER]
    with at(stack, minutes_later):
        timer.function.user_function(TimerRequest(past_due=False))
    catchup_queue_empty(stack)


def catchup_queue_empty(stack: Stack) -> None:
    queue = stack.services.storage.queue(names.QUEUE_CATCHUP)
    wait_until(lambda: queue.get_queue_properties().approximate_message_count == 0 or None, what="catch-up queue")


def unnotified_reply(stack: Stack, mailbox: str, sent: dict[str, Any], text: str) -> dict[str, Any]:
    """A contact's reply whose notification Graph drops: only a catch-up can bring it."""
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {"from": CONTACT, "subject": "RE: Trial", "in_reply_to": sent["internet_message_id"], "body_text": text}
        delivered = dict(stack.mail_world("POST", f"mail/{mailbox}/deliver", spec))
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    return delivered


def delta_rounds(stack: Stack, mailbox: str, since: int) -> int:
    """Delta requests of the mailbox after log entry ``since`` (a quiet round is one per folder)."""
    mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
    entries = stack.emulator.log.snapshot()[since:]
    return sum(1 for e in entries if e.mailbox_id == mailbox_id and e.route.endswith("/messages/delta"))


def mark(stack: Stack) -> int:
    return len(stack.emulator.log.snapshot())


def stored_ids(stack: Stack, user_id: str, thread_id: str) -> list[str]:
    response = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id})
    assert response.status_code == 200, response.text
    return [m["internet_message_id"] for m in response.json()["messages"]]


def connection_id(stack: Stack, user_id: str) -> str:
    [connection] = stack.services.connections.for_user(user_id)
    return connection.connection_id


def test_a_quiet_connection_is_not_caught_up_at_the_next_tick_but_is_once_its_interval_has_passed(
    stack: Stack, user_id: str
) -> None:
    mailbox = stack.new_mailbox("quiet")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    since = mark(stack)
    tick(stack, 0)  # its first round: nothing push had missed, so the next is due in 30 minutes
    assert delta_rounds(stack, mailbox, since) == 2, "Inbox and Sent Items, once each"
    assert RunStore(stack.services.storage.tables).get(connection_id(stack, user_id)).completed_from is not None

    late = unnotified_reply(stack, mailbox, sent, "the notification of this one was lost")
    since = mark(stack)
    tick(stack, 15)
    assert delta_rounds(stack, mailbox, since) == 0, "not due at the next quarter hour: no Graph request"
    assert stored_ids(stack, user_id, sent["thread_id"]) == [sent["internet_message_id"]]

    tick(stack, 30)
    assert delta_rounds(stack, mailbox, since) == 2
    expected = [sent["internet_message_id"], late["internetMessageId"]]
    wait_until(lambda: stored_ids(stack, user_id, sent["thread_id"]) == expected or None, what="the reply stored")


def test_a_missed_lifecycle_event_puts_the_interval_back_to_15_minutes(stack: Stack, user_id: str) -> None:
    mailbox = stack.new_mailbox("missed")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    tick(stack, 0)  # quiet: due in 30 minutes
    tick(stack, 30)  # quiet again: due in an hour
    since = mark(stack)
    tick(stack, 45)
    assert delta_rounds(stack, mailbox, since) == 0, "an hour's interval: not due 15 minutes on"

    # Graph says it dropped notifications (of a stranger's mail: the round that answers finds nothing to store);
    # push is known to have lost something, so the interval starts again from 15 minutes.
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        stack.mail_world("POST", f"mail/{mailbox}/deliver", {"from": "stranger@else.example", "subject": "Hello"})
        stack.flush()
    finally:
        notifier.set_faults(DeliveryFaults())
    runs = RunStore(stack.services.storage.tables)
    before = runs.get(connection_id(stack, user_id)).completed_from
    assert before is not None
    [subscription] = stack.emulator.subscriptions.of_mailbox(stack.world.mailbox(mailbox).id)  # type: ignore[union-attr]
    stack.emulator.subscriptions.lifecycle(subscription.id, "missed")
    wait_until(lambda: (runs.get(connection_id(stack, user_id)).completed_from or before) > before or None, what="run")
    catchup_queue_empty(stack)
    assert stored_ids(stack, user_id, sent["thread_id"]) == [sent["internet_message_id"]]

    since = mark(stack)
    tick(stack, 15)  # 15 minutes after the missed event's round, not an hour: due again
    assert delta_rounds(stack, mailbox, since) == 2


def test_the_timers_request_waits_the_connections_delay_in_the_queue(stack: Stack, user_id: str) -> None:
    """Spread over the quarter hour (``CATCHUP_SPREAD_SECONDS`` 900, production's default): a connection never
    caught up is due, and its request stays invisible in the queue for its own delay; nothing runs meanwhile."""
    mailbox = stack.new_mailbox("spread")
    start_thread(stack, user_id, mailbox)
    stack.settle()
    connection = connection_id(stack, user_id)
    delay = catchup_schedule.spread_delay(connection)
    if delay < dt.timedelta(seconds=10):
        pytest.skip(f"this connection's delay is {delay}: too short to watch (1 connection in 90)")
    since = mark(stack)
    [timer] = [t for t in stack.host.timers if t.function.function_name == TIMER]
    queue = stack.services.storage.queue(names.QUEUE_CATCHUP)
    try:
        with at(stack, 0, spread_seconds=900):
            timer.function.user_function(TimerRequest(past_due=False))
        time.sleep(6)  # the host's worker polls the queue every 2 s at most: an immediate request would have run
        assert queue.get_queue_properties().approximate_message_count >= 1
        assert not [m for m in queue.peek_messages(max_messages=32) if connection in m.content]
        assert delta_rounds(stack, mailbox, since) == 0
        assert RunStore(stack.services.storage.tables).get(connection).completed_from is None
    finally:
        queue.clear_messages()  # Azurite is shared: no request may turn up in another module's queue minutes later
