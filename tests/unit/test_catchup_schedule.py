"""The scheduled catch-up's adaptive interval and its spread over the timer period (issue 11, item 4)."""

import datetime as dt

import pytest

from sync_core.catchup_schedule import (
    BASE_INTERVAL,
    MAX_INTERVAL,
    TIMER_PERIOD,
    due_requests,
    is_due,
    next_interval,
    spread_delay,
)

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
MINUTES = dt.timedelta(minutes=1)


def test_quiet_scheduled_rounds_double_the_interval_up_to_two_hours() -> None:
    intervals, current = [], None
    for _ in range(6):
        current = next_interval(current, "scheduled", recovered=0)
        intervals.append(current / MINUTES)
    assert intervals == [30, 60, 120, 120, 120, 120]
    # A run that ran out of time and went on is the same round: it adapts as the scheduled one would.
    assert next_interval(dt.timedelta(minutes=60), "continue", recovered=0) == MAX_INTERVAL


def test_a_round_that_recovered_mail_puts_the_interval_back_to_15_minutes() -> None:
    assert next_interval(MAX_INTERVAL, "scheduled", recovered=1) == BASE_INTERVAL == 15 * MINUTES


@pytest.mark.parametrize(
    "reason",
    [
        "missed",
        "reconnected",
        "subscription_recreated",
        "reauthorized",
        "operator_resync",
        "requested during the last run",
    ],
)
def test_any_request_that_suspects_missed_mail_puts_the_interval_back_to_15_minutes(reason: str) -> None:
    """A ``missed`` lifecycle event, a reconnect, a re-created subscription's gap: push is known to have lost
    something, even when the round that answers finds nothing more."""
    assert next_interval(MAX_INTERVAL, reason, recovered=0) == BASE_INTERVAL


def test_each_connection_waits_the_same_delay_at_every_tick_and_connections_spread_over_the_period() -> None:
    ids = [f"conn-{n}" for n in range(10_000)]
    delays = [spread_delay(c) for c in ids]
    assert delays == [spread_delay(c) for c in ids]  # deterministic
    assert all(dt.timedelta(0) <= d < TIMER_PERIOD for d in delays)
    per_minute = [0] * 15
    for d in delays:
        per_minute[int(d / MINUTES)] += 1
    assert min(per_minute) > 10_000 / 15 * 0.85, per_minute  # even: no minute gets a burst
    assert spread_delay("conn-1", dt.timedelta(0)) == dt.timedelta(0)  # unspread, as the soak asks


def test_a_connection_due_in_30_minutes_is_requested_two_ticks_later_not_at_the_next() -> None:
    """Its last run started at its slot (tick + delay) plus a few seconds: the tick 15 minutes on does not request
    it, the tick 30 minutes on does (not a third tick for a few seconds' lateness)."""
    delay = dt.timedelta(minutes=7, seconds=12)
    due = T0 + delay + dt.timedelta(seconds=5) + 30 * MINUTES
    assert not is_due(due, T0 + 15 * MINUTES, delay)
    assert is_due(due, T0 + 30 * MINUTES, delay)
    assert is_due(None, T0, delay)  # never caught up: due now


def test_the_timer_requests_only_the_connections_due_each_with_its_delay() -> None:
    due_at = {"quiet": T0 + 2 * dt.timedelta(hours=2), "recovering": T0 - MINUTES}
    requested = due_requests(["quiet", "recovering", "new"], due_at, T0, TIMER_PERIOD)
    assert [c for c, _ in requested] == ["new", "recovering"]
    assert dict(requested)["new"] == spread_delay("new")


def test_quiet_connections_cost_an_eighth_of_the_fixed_quarter_hour_rounds() -> None:
    """1,000 connections whose push misses nothing, over 6 hours of ticks: after the first hours each is caught up
    every 2 hours, 8 times fewer rounds than one every 15 minutes (the capacity model's figure)."""
    ids = [f"c{n}" for n in range(1000)]
    due_at: dict[str, dt.datetime] = {}
    interval: dict[str, dt.timedelta | None] = dict.fromkeys(ids)
    rounds_per_tick = []
    for tick_number in range(24):
        tick = T0 + tick_number * TIMER_PERIOD
        requested = due_requests(ids, due_at, tick, TIMER_PERIOD)
        for connection_id, delay in requested:
            interval[connection_id] = next_interval(interval[connection_id], "scheduled", recovered=0)
            due_at[connection_id] = tick + delay + interval[connection_id]  # type: ignore[operator]
        rounds_per_tick.append(len(requested))
    assert rounds_per_tick[0] == 1000
    last_two_hours = sum(rounds_per_tick[-8:])
    assert last_two_hours == 1000  # each connection once in 2 hours: 1,000 rounds instead of 8,000


def test_a_tick_requests_at_most_its_limit_those_due_longest_first() -> None:
    """Whatever is due at once (the first tick of this scheduler, a mass reconnect), the timer's run stays short:
    the longest overdue go first, connections never caught up before all; the rest are due at the next tick."""
    due_at = {"late": T0 - 3 * dt.timedelta(hours=1), "later": T0 - dt.timedelta(hours=1), "on time": T0}
    requested = due_requests(["on time", "later", "new", "late"], due_at, T0, TIMER_PERIOD, limit=3)
    assert [c for c, _ in requested] == ["new", "late", "later"]
    assert [c for c, _ in due_requests(["on time"], due_at, T0 + TIMER_PERIOD, TIMER_PERIOD, limit=3)] == ["on time"]
