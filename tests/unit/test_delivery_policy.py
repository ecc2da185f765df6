"""What Enrollio's answer means for an event, and when the next attempt comes (sync_core.delivery, pure); an
event's id is its fact's, however often its writer runs (sync_core.events)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from sync_core import events
from sync_core.adapters.enrollio_events import Answer
from sync_core.connections import Connection, Status
from sync_core.delivery import HORIZON, MAX_RETRY_SECONDS, Verdict, retry_delay, verdict


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),  # no answer: connection refused, timeout
        (408, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        # Not refused at once (as Stripe and Svix): a stopped App Service answers 403, a gateway or a slot swap 404,
        # a secret being rotated 401; each passes, and the horizon ends the attempts.
        (301, Verdict.RETRY),  # never followed: the signed body goes only where Enrollio said
        (400, Verdict.RETRY),
        (401, Verdict.RETRY),
        (403, Verdict.RETRY),
        (404, Verdict.RETRY),
        (410, Verdict.RETRY),
    ],
)
def test_enrollios_answer_decides_delivered_or_retried(status: int | None, expected: Verdict) -> None:
    assert verdict(Answer(status)) is expected


def test_retries_double_from_ten_seconds_up_to_an_hour_and_honour_a_longer_retry_after() -> None:
    delays = [retry_delay(attempt, None) for attempt in range(1, 12)]
    assert delays[:5] == [10, 20, 40, 80, 160]
    assert max(delays) == MAX_RETRY_SECONDS == 3600
    assert retry_delay(1, 120) == 120  # Enrollio asked for longer
    assert retry_delay(4, 5) == 80  # a shorter Retry-After does not hurry the back-off
    assert retry_delay(1, 10**6) == MAX_RETRY_SECONDS  # nor does a huge one stop the attempts


def test_a_receiver_down_for_an_hour_is_tried_again_within_the_horizon() -> None:
    elapsed, attempt = 0.0, 1
    while elapsed < 3600:
        elapsed += retry_delay(attempt, None)
        attempt += 1
    assert dt.timedelta(seconds=elapsed) < dt.timedelta(hours=2) < HORIZON


AT = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
CONNECTION = Connection(
    user_id="u-1", account_id="a-1", connection_id="c-1", address="pat@school.example", tenant_id="t",
    user_object_id="o", home_account_id="h", status=Status.CONNECTED, active=True, connected_at=AT, updated_at=AT,
)  # fmt: skip


def test_the_same_fact_has_the_same_webhook_id_however_often_its_writer_runs() -> None:
    first = events.message_synced(CONNECTION, "th-1", "<m1@home.example>", "inbound", [10], AT)
    again = events.message_synced(CONNECTION, "th-1", "<m1@home.example>", "inbound", [10], AT + dt.timedelta(hours=1))
    other = events.message_synced(CONNECTION, "th-1", "<m2@home.example>", "inbound", [10], AT)
    assert first.event_id == again.event_id != other.event_id
    assert first.event_id.startswith("evt_") and len(first.event_id) == 36


def test_a_connection_event_is_written_only_when_its_status_changes() -> None:
    demoted = dataclasses.replace(CONNECTION, active=False)
    assert events.connection_changed(CONNECTION, demoted) is None  # Update Email made another one active
    reason = "invalid_grant: AADSTS50173 pat@school.example"
    lost = dataclasses.replace(CONNECTION, status=Status.NEEDS_RECONNECT, status_reason=reason)
    event = events.connection_changed(CONNECTION, lost)
    assert event is not None and event.type is events.EventType.CONNECTION_NEEDS_RECONNECT
    body = json.loads(event.body())
    assert body["data"]["reason"] == "invalid_grant"  # the code only: the identity platform's text names the account
    assert "pat@school.example" not in event.body().decode()
    assert body["timestamp"] == "2026-11-30T09:00:00Z"
