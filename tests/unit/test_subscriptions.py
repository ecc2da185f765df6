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
    same_resource,
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


def test_parse_iso_keeps_utc_offsets() -> None:
    # Graph's own samples carry offsets: "2021-12-31T16:16:44.9907405+05:30" is 10:46:44 UTC (CONTRACT.md
    # section 1.1, subscriptionExpirationDateTime in C concepts/outlook-change-notifications-overview.md).
    assert parse_iso("2021-12-31T16:16:44.9907405+05:30") == dt.datetime(
        2021, 12, 31, 10, 46, 44, 990740, tzinfo=dt.UTC
    )
    assert parse_iso("2021-07-07T21:42:18.2257768+00:00") == dt.datetime(2021, 7, 7, 21, 42, 18, 225776, tzinfo=dt.UTC)
    assert parse_iso("2026-01-01T00:00:00-08:00") == dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)
    assert parse_iso("2026-01-01T00:00:00").tzinfo == dt.UTC  # no offset: Graph's timestamps are UTC


def test_resources_compare_without_the_leading_slash_and_case() -> None:
    assert same_resource("/users/5b1c-guid/messages", "users/5b1c-guid/messages")
    assert same_resource("/users/5B1C-guid/messages", "Users/5b1c-guid/Messages")
    assert not same_resource("/users/5b1c-guid/messages", "users/other-guid/messages")
    assert not same_resource("/users/5b1c-guid/messages", "users/5b1c-guid/mailFolders('inbox')/messages")
