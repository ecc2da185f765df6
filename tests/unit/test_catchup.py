"""Where delta catch-up starts a round over after Graph reset its token (CONTRACT.md section 7, R8)."""

import datetime as dt
import json

from sync_core.adapters.catchup_runs import RunState
from sync_core.adapters.ops_store import DeltaCursor
from sync_core.catchup import gap_start, resync_from
from sync_core.catchup_queue import CatchupRequest
from sync_core.catchup_runs import Admission, admit

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def test_a_resync_starts_a_day_before_the_last_completed_round() -> None:
    """A day of overlap covers Graph's processing delays (CONTRACT.md section 7): a message received 23 hours
    before the last completed round is inside the restart, one received 25 hours before is not."""
    last_round = T0 + dt.timedelta(days=30)
    cursor = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=T0, saved_at=last_round)
    restart = resync_from(cursor)
    assert restart is not None
    assert restart <= last_round - dt.timedelta(hours=23)
    assert restart > last_round - dt.timedelta(hours=25)


def test_a_resync_never_reaches_back_before_the_start_time() -> None:
    """R8: the start time of a reconnect after a disconnect bounds every later round, resyncs included."""
    recent = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=T0, saved_at=T0 + dt.timedelta(hours=2))
    assert resync_from(recent) == T0
    unfinished = DeltaCursor("", start_from=T0, saved_at=T0 + dt.timedelta(days=3))  # the first round never ended
    assert resync_from(unfinished) == T0


def test_a_cursor_without_a_start_time_resyncs_from_its_last_round_or_the_whole_folder() -> None:
    legacy = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=None, saved_at=T0)
    assert resync_from(legacy) == T0 - dt.timedelta(days=1)
    assert resync_from(None) is None
    assert resync_from(DeltaCursor("", None, T0)) is None


def test_the_window_of_a_capped_round_starts_where_a_reset_would_and_never_before_sync_from() -> None:
    """CONTRACT.md section 7's 5,000 cap: the list query fills from there (R8 bounds it)."""
    completed = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=T0, saved_at=T0 + dt.timedelta(days=3))
    assert gap_start(completed, T0) == T0 + dt.timedelta(days=2)
    first_round = DeltaCursor("", start_from=T0, saved_at=T0)
    assert gap_start(first_round, T0) == T0
    reconnected = T0 + dt.timedelta(days=2, hours=12)  # a reconnect after a disconnect, later than the reset point
    assert gap_start(completed, reconnected) == reconnected
    assert gap_start(None, None) is None  # no start known: the whole folder


def _asked(at: dt.datetime) -> CatchupRequest:
    return CatchupRequest(user_id="u", connection_id="c", reason="scheduled", requested_at=at)


def test_a_request_a_later_completed_run_started_after_is_covered() -> None:
    done = RunState(completed_from=T0)
    assert admit(_asked(T0 - dt.timedelta(minutes=15)), done, T0) is Admission.COVERED
    assert admit(_asked(T0), done, T0) is Admission.COVERED  # asked as it started: it saw what was asked about
    assert admit(_asked(T0 + dt.timedelta(seconds=1)), done, T0) is Admission.RUN


def test_a_request_during_another_run_waits_for_it_unless_it_is_that_runs_retry_or_the_run_is_dead() -> None:
    running = RunState(running_request=T0, running_until=T0 + dt.timedelta(minutes=5))
    later = T0 + dt.timedelta(minutes=1)
    assert admit(_asked(later), running, later) is Admission.IN_PROGRESS
    assert admit(_asked(T0), running, later) is Admission.RUN  # the queue's retry of the run's own request
    dead = T0 + dt.timedelta(minutes=6)
    assert admit(_asked(later), running, dead) is Admission.RUN  # its claim ran out: the run is over


def test_a_catchup_request_carries_the_correlation_id_of_the_path_that_asked() -> None:
    import datetime as _dt
    from types import SimpleNamespace

    from sync_core import telemetry
    from sync_core.catchup_queue import request_catchup

    sent: list[str] = []
    queue = SimpleNamespace(send_message=lambda text, **_: sent.append(text))
    access = SimpleNamespace(
        storage=SimpleNamespace(queue=lambda _name: queue),
        clock=SimpleNamespace(now=lambda: _dt.datetime(2026, 11, 30, tzinfo=_dt.UTC)),
    )
    connection = SimpleNamespace(user_id="u-1", connection_id="c-1")
    with telemetry.operation("renew", "0af7651916cd43dd8448eb211c80319c"):
        request_catchup(connection, "missed", access)  # type: ignore[arg-type]
    assert json.loads(sent[0]).get("correlation_id") == "0af7651916cd43dd8448eb211c80319c"
