"""Timer triggers: NCRONTAB schedules (six fields, seconds first), in UTC, one invocation at a time per function.

``past_due`` is true when the run starts after the following occurrence was already due (the host's
"the timer is late" signal). Not emulated: the schedule monitor (``useMonitor``: no ``schedule_status``, no
catch-up of runs missed while the host was down), ``WEBSITE_TIME_ZONE``, and TimeSpan schedules (App Service plans
only; this app runs on Flex Consumption).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from devtools.local_host_invoke import invoke


class ScheduleError(ValueError):
    """A schedule the local host cannot run; the message names the function."""


def validate_ncrontab(function_name: str, schedule: str) -> str:
    """The schedule, if it is a six-field NCRONTAB expression (``{second} {minute} {hour} {day} {month} {dow}``)."""
    if len(schedule.split()) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
        raise ScheduleError(
            f"Functions.{function_name}: schedule {schedule!r} is not a six-field NCRONTAB expression "
            "('{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 */5 * * * *')"
        )
    return schedule


def next_occurrence(schedule: str, after: dt.datetime) -> dt.datetime:
    """The first occurrence strictly after ``after`` (tz-aware UTC in, tz-aware UTC out)."""
    result: dt.datetime = croniter(schedule, after, second_at_beginning=True).get_next(dt.datetime)
    return result


def is_past_due(schedule: str, due: dt.datetime, now: dt.datetime) -> bool:
    """True when a run for ``due`` starts at ``now``, after the occurrence following ``due`` was also due."""
    return next_occurrence(schedule, due) <= now


@dataclass(frozen=True)
class TimerFunction:
    function_name: str
    arg_name: str
    schedule: str
    run_on_startup: bool
    user_function: Any


class TimerRunner:
    """One timer function's schedule, on its own thread."""

    def __init__(self, function: TimerFunction, now: Callable[[], dt.datetime] | None = None) -> None:
        self.function = function
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer-{function.function_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling; a running invocation is waited for."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        if self.function.run_on_startup:
            self._fire(self._now(), past_due=False)
        due = next_occurrence(self.function.schedule, self._now())
        while not self._stop.wait(max((due - self._now()).total_seconds(), 0.0)):
            now = self._now()
            if now < due:  # woke a little early
                continue
            self._fire(now, past_due=is_past_due(self.function.schedule, due, now))
            # From the end of the run, as the host does: a run longer than the period skips occurrences.
            due = next_occurrence(self.function.schedule, self._now())

    def _fire(self, now: dt.datetime, past_due: bool) -> None:
        # A failure is logged by invoke; the next occurrence runs as scheduled.
        with contextlib.suppress(Exception):
            invoke(
                self.function.function_name,
                f"Timer fired at {now.isoformat()}",
                self.function.user_function,
                lambda: {self.function.arg_name: TimerRequest(past_due=past_due)},
            )
