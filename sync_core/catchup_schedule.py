"""When each connection's next scheduled catch-up is due, and when within a timer period its request runs.

The scheduled catch-up is a safety net under push: at 100,000 mailboxes a round per connection every 15 minutes
costs more Graph requests than the mail it protects (``docs/capacity.md``). So each connection's interval adapts:
a scheduled round that found nothing push had missed doubles it (15 min, 30 min, 1 h, 2 h at most); a round that
recovered mail, and any round asked for by something that suspects missed mail (a ``missed`` lifecycle event, a
re-created subscription's notification gap, a reauthorization, a reconnect, an operator's resync), puts it back to
15 minutes. A reconnect also forgets the connection's runs with its cursors: it starts from no interval at all.

The timer's requests do not all run at once: each connection's request waits a delay within the timer period
that depends only on its id, so the rounds spread evenly over the period and a connection's rounds stay an
interval apart (its delay is the same at every tick).
"""

from __future__ import annotations

import datetime as dt
import hashlib

TIMER_PERIOD = dt.timedelta(minutes=15)  # function_app's schedule_catchups: "0 */15 * * * *"
BASE_INTERVAL = dt.timedelta(minutes=15)
MAX_INTERVAL = dt.timedelta(hours=2)
SCHEDULED = "scheduled"  # the timer's reason
CONTINUE = "continue"  # a run that ran out of time goes on: the same round, not a new suspicion
ADAPTING_REASONS = frozenset({SCHEDULED, CONTINUE})  # every other reason suspects missed mail
# At most this many requests a tick, so the timer's run stays well within its 5-minute functionTimeout whatever
# is due (the first run of this scheduler, a mass reconnect): ~85 s at the ~300 puts/s measured on Azurite.
TICK_LIMIT = 25_000
NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def next_interval(current: dt.timedelta | None, reason: str, recovered: int) -> dt.timedelta:
    """The interval after a completed run asked for with ``reason`` that stored or skipped ``recovered`` messages
    push had not (pure). ``current`` None: the connection's first run (or its first since a reconnect)."""
    if recovered or reason not in ADAPTING_REASONS:
        return BASE_INTERVAL
    return min((current or BASE_INTERVAL) * 2, MAX_INTERVAL)


def spread_delay(connection_id: str, period: dt.timedelta = TIMER_PERIOD) -> dt.timedelta:
    """How long the timer's request for ``connection_id`` stays invisible: the same for the connection at every
    tick, uniform over ``period`` across connections (whole seconds: the queue's visibility timeout)."""
    seconds = int(period.total_seconds())
    if seconds <= 0:
        return dt.timedelta(0)
    digest = hashlib.sha256(connection_id.encode()).digest()
    return dt.timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds)


def is_due(due_at: dt.datetime | None, tick: dt.datetime, delay: dt.timedelta) -> bool:
    """Whether the timer's run at ``tick`` requests a connection due at ``due_at`` whose request waits ``delay``.

    Its run would start at ``tick + delay``; the tick nearest its due time requests it (within half a period),
    so an interval of 30 minutes is two ticks, not three when the last run started a few seconds after its slot.
    None: never caught up (or not since a reconnect), due now."""
    return due_at is None or due_at <= tick + delay + TIMER_PERIOD / 2


def due_requests(
    connection_ids: list[str],
    due_at: dict[str, dt.datetime],
    tick: dt.datetime,
    spread: dt.timedelta,
    limit: int = TICK_LIMIT,
) -> list[tuple[str, dt.timedelta]]:
    """The connections the timer's run at ``tick`` requests, each with its request's delay (pure): at most
    ``limit``, those due longest first (never caught up first of all); the rest are due at the next tick still."""
    planned = ((c, spread_delay(c, spread)) for c in connection_ids)
    due = [(c, delay) for c, delay in planned if is_due(due_at.get(c), tick, delay)]
    due.sort(key=lambda item: due_at.get(item[0], NEVER))
    return due[:limit]
