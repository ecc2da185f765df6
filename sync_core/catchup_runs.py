"""Catch-up requests coalesce per connection: one run at a time, and no run for a request already answered.

Requests come from the 15-minute timer, from ``missed`` and other lifecycle events, from reconnects, and from a
run that ran out of time. A huge mailbox's run may outlast several timer ticks, and a backed-up queue may hold
several requests of one connection: each would walk the same mailbox again. So a request is

- **covered**, and dropped, when a run that started after it was requested has completed: that run saw all the
  request was asking about;
- **in progress**, and dropped, when another run of the connection is under way; it is noted (``wanted_at``), and
  the run that is under way asks for one more run when it ends, so mail that arrived during it is not left for
  the next timer tick;
- otherwise **run**: claimed (an etag-conditional write), so that no other instance starts one too.

A completed run also sets when the timer next asks for one (``catchup_schedule``: the interval grows while runs
find nothing push missed).

A run that was claimed but never ended (its instance died, or the function timed out) is taken for dead after
``RUN_CLAIM``; the queue's retry of the very request that claimed it takes it over at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from enum import StrEnum

from sync_core import catchup_schedule
from sync_core.adapters.catchup_runs import RunState, RunStore
from sync_core.catchup_queue import CatchupRequest
from sync_core.services import Services

# host.json's functionTimeout: a run claimed longer ago than this has ended, one way or another.
RUN_CLAIM = dt.timedelta(minutes=5)
WRITE_TRIES = 5  # etag races between instances writing one connection's row at once


class Admission(StrEnum):
    RUN = "run"
    COVERED = "covered by a later run"
    IN_PROGRESS = "a run is in progress"


class RunEnd(StrEnum):
    COMPLETED = "completed"  # every folder's round reached its deltaLink
    PAUSED = "paused"  # out of time: the rounds resume from their saved nextLinks in a run asked for now
    FAILED = "failed"  # an exception: the queue retries the request


def admit(request: CatchupRequest, state: RunState, now: dt.datetime) -> Admission:
    """What to do with ``request``, given the connection's runs (pure)."""
    if state.completed_from is not None and request.requested_at <= state.completed_from:
        return Admission.COVERED
    running = state.running_until is not None and state.running_until > now
    if running and state.running_request != request.requested_at:  # the same request again: its retry
        return Admission.IN_PROGRESS
    return Admission.RUN


def claim(request: CatchupRequest, services: Services) -> tuple[Admission, RunState | None]:
    """Admit ``request``; when it runs, the claimed state to pass to ``end``."""
    store = RunStore(services.storage.tables)
    for _ in range(WRITE_TRIES):
        now = services.clock.now()
        state = store.get(request.connection_id)
        admission = admit(request, state, now)
        if admission is Admission.COVERED:
            return admission, None
        if admission is Admission.IN_PROGRESS:
            wanted = max(request.requested_at, state.wanted_at or request.requested_at)
            if store.write(request.connection_id, state, replace(state, wanted_at=wanted)) is not None:
                return admission, None
            continue
        claimed = replace(state, running_request=request.requested_at, running_until=now + RUN_CLAIM)
        written = store.write(request.connection_id, state, claimed)
        if written is not None:
            return admission, written
    return Admission.IN_PROGRESS, None  # other instances keep writing the row: one of them is running


def end(
    connection_id: str,
    claimed: RunState,
    started: dt.datetime,
    how: RunEnd,
    services: Services,
    reason: str = catchup_schedule.SCHEDULED,
    recovered: int = 0,
) -> bool:
    """Record how the run ended, and after a completed run when the next is due (its request's ``reason``, and
    ``recovered``: messages it stored or skipped that push had not); True when another run is wanted now (paused,
    or asked for while it ran).

    ``started``: what the run covers from, the earliest start of the rounds it completed (a round resumed from an
    earlier run's nextLink started in that run), so a request made after it is never taken as covered. A request
    noted while a run paused is kept for the run that completes its rounds."""
    store = RunStore(services.storage.tables)
    for _ in range(WRITE_TRIES):
        state = store.get(connection_id)
        if state.etag is None:
            return False  # the connection's cursors were forgotten (a disconnect or reconnect) meanwhile
        wanted = state.wanted_at is not None and state.wanted_at > started
        completed_from = started if how is RunEnd.COMPLETED else state.completed_from
        mine = state.running_request == claimed.running_request
        interval, due_at = state.interval, state.due_at
        if how is RunEnd.COMPLETED:
            interval = catchup_schedule.next_interval(state.interval, reason, recovered)
            due_at = started + interval
        ended = RunState(
            running_request=None if mine else state.running_request,
            running_until=None if mine else state.running_until,
            completed_from=max(completed_from, state.completed_from or completed_from) if completed_from else None,
            wanted_at=None if how is RunEnd.COMPLETED else state.wanted_at,
            interval=interval,
            due_at=due_at,
        )
        if store.write(connection_id, state, ended) is not None:
            return how is RunEnd.PAUSED or (how is RunEnd.COMPLETED and wanted)
    return how is RunEnd.PAUSED
