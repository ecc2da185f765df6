"""Delivering the outbox's events to Enrollio: the ``enrollio-events`` worker and the sweeper behind it.

A queue message is only a wake-up (``{"event_id", "attempt", "check"?, "replay"?}``); the outbox row is the truth.
One attempt:

1. the row is read (gone: delivered already); a wake-up sent for an earlier attempt than the row's is stale and
   ignored (the writer's wake-up late in a backlogged queue, after the sweeper's started the attempts), so one
   event has one chain of attempts; a refused row is tried again only by an operator's replay (``replay``); an
   unconfirmed row woken by the sweeper has its fact checked first (``events``: delivered only if the fact exists;
   else the row is dropped, its writer never wrote the fact);
2. the row is claimed (a conditional update: two wake-ups of the same attempt do not both post);
3. the event is signed afresh (Standard Webhooks: the timestamp is the attempt's) and posted;
4. Enrollio's answer decides (``verdict``): 2xx delivered (the row is deleted); any other answer, or none, is
   retried after a back-off doubling from ``FIRST_RETRY_SECONDS`` up to ``MAX_RETRY_SECONDS`` (or Enrollio's
   ``Retry-After`` when longer), by re-queueing the wake-up with that delay, for ``HORIZON`` after the event was
   written, as Stripe and Svix do: a stopped App Service answers 403, a gateway or a slot swap 404, a secret
   being rotated 401, and each passes without anyone replaying. Past the horizon the event is refused, kept in the
   outbox as ``refused`` and recorded in the Failures table (``make status`` shows both; ``replay-poison
   enrollio-events`` wakes refused events again after the receiver is fixed).

A receiver down for an hour loses nothing: the events wait in the outbox, and the attempts go on, at most an hour
apart, for three days. Delivery is at least once; ``webhook-id`` is stable per fact, so Enrollio deduplicates.
Events of one thread are not ordered by delivery: each carries the moment of its fact (``timestamp``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from enum import StrEnum
from functools import cache

import requests
from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync_core import events, names, telemetry
from sync_core.adapters.enrollio_events import Answer, post_event
from sync_core.adapters.outbox_store import WRITER_GRACE, OutboxRow, OutboxStore
from sync_core.event_signing import headers
from sync_core.failures import Permanent, malformed, parse_json, record
from sync_core.services import Services

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0
HORIZON = dt.timedelta(days=3)
LEASE = dt.timedelta(minutes=2)  # an attempt's claim: longer than its timeouts (5 s to connect, 15 s to answer)


class WakeUp(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event_id: str = Field(pattern=r"^evt_[0-9a-f]{32}$")
    # The row's attempts when this wake-up was sent (None: a wake-up of an earlier version, never stale).
    attempt: int | None = Field(default=None, ge=0)
    check: bool = False  # the sweeper's: the writer may have died before its fact was written
    replay: bool = False  # an operator's replay of a refused event (its Failures row): a fresh horizon


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"


def verdict(answer: Answer) -> Verdict:
    """What Enrollio's answer means for the event (pure): a 2xx delivered it; anything else is tried again (a
    redirect too, never followed: the signed body goes only where Enrollio said), until the horizon."""
    if answer.status is not None and 200 <= answer.status < 300:
        return Verdict.DELIVERED
    return Verdict.RETRY


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from the first retry's, capped; Retry-After when longer."""
    backoff = float(min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0)))
    return max(backoff, min(retry_after or 0.0, MAX_RETRY_SECONDS))


def describe(answer: Answer) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else f"no answer ({answer.error or 'unreachable'})"


@cache
def _session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "enrollio-outlook-sync-events"
    return session


def deliver(body: str, services: Services) -> str:
    """The ``enrollio-events`` worker: one attempt at one event (see the module docstring)."""
    try:
        wake = WakeUp.model_validate(parse_json(body, "event wake-up"))
    except ValidationError as exc:
        raise malformed(exc, "event wake-up") from None
    outbox = OutboxStore(services.storage.tables)
    row = outbox.get(wake.event_id)
    if row is None:
        return f"{wake.event_id}: delivered already"
    with telemetry.operation("deliver event", row.correlation_id, **{"event.type": row.type}):
        outcome = _attempt(wake, row, outbox, services)
        log.info("event %s", outcome)
        return outcome


def _attempt(wake: WakeUp, row: OutboxRow, outbox: OutboxStore, services: Services) -> str:
    now = services.clock.now()
    if not services.settings.events_enabled or not services.settings.enrollio_events_url:
        why = services.settings.events_problem or "ENROLLIO_EVENTS_URL is unset"
        return f"{row.event_id}: {why}; kept in the outbox (the sweeper wakes it once fixed)"
    if row.status == "refused":
        if not wake.replay:  # a leftover wake-up: a refused event waits for the operator
            return f"{row.event_id}: refused; replay-poison {names.QUEUE_EVENTS} tries it again"
        if outbox.reopen(row, now) is None:  # a replay after a fix: a fresh horizon
            return f"{row.event_id}: changed meanwhile"
        row = outbox.get(row.event_id) or row
    elif wake.replay:
        return f"{row.event_id}: pending already; its own attempts go on"
    elif wake.attempt is not None and wake.attempt != row.attempts:
        return f"{row.event_id}: a stale wake-up (for attempt {wake.attempt + 1}; {row.attempts} made)"
    if wake.check and not row.confirmed and not outbox.fact_holds(row.fact):
        outbox.delivered(row.event_id)  # its writer never wrote the fact: nothing happened to announce
        log.warning("event %s (%s) dropped: its fact was never written", row.event_id, row.type)
        return f"{row.event_id}: dropped, no fact"
    if now - row.created_at > HORIZON:
        return _refuse(row, f"not delivered within {HORIZON.days} days; last: {row.last_error}", services)
    if outbox.claim(row, now, LEASE) is None:
        return f"{row.event_id}: another attempt has it"
    answer = post_event(
        _session(),
        services.settings.enrollio_events_url,
        row.body,
        headers(services.settings.events_keys, row.event_id, int(now.timestamp()), row.body),
    )
    outcome = verdict(answer)
    telemetry.events.add(1, {"outcome": outcome.value, "type": row.type})
    if outcome is Verdict.DELIVERED:
        outbox.delivered(row.event_id)
        return f"{row.event_id}: delivered ({describe(answer)})"
    delay = retry_delay(row.attempts + 1, answer.retry_after)
    due = now + dt.timedelta(seconds=delay)
    outbox.retry_at(row.event_id, describe(answer), due + WRITER_GRACE)
    try:
        events.wake(services, row.event_id, attempt=row.attempts + 1, delay=delay)
    except AzureError as exc:
        # Not raised: the host would retry this message at once, five times, ignoring the back-off. The row is due
        # at due + WRITER_GRACE, when the sweeper wakes it.
        why = type(exc).__name__
        log.warning("event %s: its retry's wake-up was not queued (%s); the sweeper wakes it", row.event_id, why)
        return f"{row.event_id}: {describe(answer)}; attempt {row.attempts + 2} by the sweeper"
    return f"{row.event_id}: {describe(answer)}; attempt {row.attempts + 2} in {delay:.0f}s"


def _refuse(row: OutboxRow, why: str, services: Services) -> str:
    OutboxStore(services.storage.tables).refuse(row.event_id, why, services.clock.now())
    telemetry.events.add(1, {"outcome": "refused", "type": row.type})
    body = json.dumps({"event_id": row.event_id, "replay": True})  # what replay-poison sends back
    record(names.QUEUE_EVENTS, body, Permanent("event_refused", f"{row.type} {row.event_id}: {why}"), services)
    return f"{row.event_id}: refused ({why})"


def sweep(services: Services) -> int:
    """The timer: wake every pending event whose wake-up is late (its writer died between the fact and the wake-up,
    or its queue message was lost); those never confirmed get their fact checked first. How many were woken."""
    if not services.settings.events_enabled:
        return 0
    outbox = OutboxStore(services.storage.tables)
    now = services.clock.now()
    woken = 0
    for row in outbox.overdue(now):
        if outbox.postpone(row, now + WRITER_GRACE) is not None:  # else another sweep or attempt took it
            events.wake(services, row.event_id, attempt=row.attempts, check=not row.confirmed)
            woken += 1
    return woken
