"""Where delta catch-up starts a round over after Graph reset its token (CONTRACT.md section 7, R8)."""

import datetime as dt

from sync_core.adapters.ops_store import DeltaCursor
from sync_core.catchup import RESYNC_OVERLAP, resync_from

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def test_a_resync_starts_a_day_before_the_last_completed_round() -> None:
    cursor = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=T0, saved_at=T0 + dt.timedelta(days=30))
    assert resync_from(cursor) == T0 + dt.timedelta(days=30) - RESYNC_OVERLAP
    assert dt.timedelta(days=1) == RESYNC_OVERLAP


def test_a_resync_never_reaches_back_before_the_start_time() -> None:
    """R8: the start time of a reconnect after a disconnect bounds every later round, resyncs included."""
    recent = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=T0, saved_at=T0 + dt.timedelta(hours=2))
    assert resync_from(recent) == T0
    unfinished = DeltaCursor("", start_from=T0, saved_at=T0 + dt.timedelta(days=3))  # the first round never ended
    assert resync_from(unfinished) == T0


def test_a_cursor_without_a_start_time_resyncs_from_its_last_round_or_the_whole_folder() -> None:
    legacy = DeltaCursor("https://graph/delta?$deltatoken=x", start_from=None, saved_at=T0)
    assert resync_from(legacy) == T0 - RESYNC_OVERLAP
    assert resync_from(None) is None
    assert resync_from(DeltaCursor("", None, T0)) is None
