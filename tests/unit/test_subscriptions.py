"""Subscription requests, renewal windows and clientState checks, with a fixed clock."""

import datetime as dt

from sync_core.subscriptions import (
    MAX_LIFETIME,
    Subscription,
    client_state_matches,
    create_request,
    due_for_renewal,
    new_client_state,
    parse_iso,
    renew_request,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def sub(sid: str, expires_in: dt.timedelta) -> Subscription:
    return Subscription(sid, "u", "c", "t", "state", "/users/x/messages", NOW + expires_in)


def test_create_request_targets_the_whole_mailbox_with_both_urls_and_a_legal_expiry() -> None:
    body = create_request("5b1c-guid", "https://sync.example.net/", "s3cret", NOW)
    assert body["resource"] == "/users/5b1c-guid/messages"
    assert body["changeType"] == "created"
    assert body["notificationUrl"] == "https://sync.example.net/api/graph/notifications"
    assert body["lifecycleNotificationUrl"] == "https://sync.example.net/api/graph/lifecycle"
    expires = parse_iso(body["expirationDateTime"])
    assert NOW + MAX_LIFETIME - dt.timedelta(hours=1) < expires < NOW + MAX_LIFETIME
    assert parse_iso(renew_request(NOW)["expirationDateTime"]) == expires


def test_client_states_are_random_and_within_graphs_128_characters() -> None:
    states = {new_client_state() for _ in range(50)}
    assert len(states) == 50
    assert all(16 <= len(s) <= 128 for s in states)


def test_only_subscriptions_inside_the_window_are_due() -> None:
    subs = [
        sub("expired", -dt.timedelta(minutes=5)),
        sub("soon", dt.timedelta(hours=23)),
        sub("edge", dt.timedelta(hours=24)),
        sub("later", dt.timedelta(hours=25)),
    ]
    assert [s.subscription_id for s in due_for_renewal(subs, NOW)] == ["expired", "soon", "edge"]


def test_client_state_check() -> None:
    assert client_state_matches("abc", "abc")
    assert not client_state_matches("abc", "abd")
    assert not client_state_matches("abc", None)


def test_parse_iso_handles_graphs_seven_fractional_digits() -> None:
    assert parse_iso("2019-03-20T11:00:00.0000000Z") == dt.datetime(2019, 3, 20, 11, tzinfo=dt.UTC)
    assert parse_iso("2016-03-19T22:11:09.952Z").microsecond == 952000
    assert parse_iso("2016-03-19T22:11:09Z").second == 9
