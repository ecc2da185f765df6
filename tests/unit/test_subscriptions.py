"""Subscription requests, their spread lifetimes, the renewal timer's pace and clientState checks, with a fixed
clock."""

import datetime as dt
from collections import Counter

from sync_core.connections import mailbox_key
from sync_core.subscriptions import (
    LIFETIME_SPREAD,
    MAX_LIFETIME,
    RENEWAL_WINDOW,
    RENEWALS_PER_SECOND,
    client_state_matches,
    create_request,
    new_client_state,
    parse_iso,
    renew_request,
    renewal_delays,
    requested_expiry,
    same_resource,
    spread,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


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


def test_lifetimes_are_spread_over_the_last_three_days_of_the_longest_graph_allows() -> None:
    assert requested_expiry(NOW, 0.0) == NOW + MAX_LIFETIME - dt.timedelta(minutes=30)
    assert requested_expiry(NOW, 1.0) == requested_expiry(NOW, 0.0) - LIFETIME_SPREAD
    # Out of range is held to it: never past Graph's maximum, never shorter than the spread allows.
    assert requested_expiry(NOW, -3.0) == requested_expiry(NOW, 0.0)
    assert requested_expiry(NOW, 7.0) == requested_expiry(NOW, 1.0)
    # Even the shortest leaves about three days between renewals: it is renewed inside its last day.
    assert requested_expiry(NOW, 1.0) - RENEWAL_WINDOW > NOW + dt.timedelta(days=2, hours=23)
    body = create_request("5b1c-guid", "https://sync.example.net/", "s3cret", NOW, spread=0.5)
    assert parse_iso(body["expirationDateTime"]) == requested_expiry(NOW, 0.5)
    assert parse_iso(renew_request(NOW, 0.25)["expirationDateTime"]) == requested_expiry(NOW, 0.25)


def test_mailboxes_connected_in_the_same_hour_come_up_for_renewal_in_many_timer_runs() -> None:
    """1,000 mailboxes connected at once: each hourly run of the renewal timer meets about 1/72 of them, not all."""
    expiries = [requested_expiry(NOW, spread()) for _ in range(1000)]
    assert all(
        NOW + MAX_LIFETIME - LIFETIME_SPREAD - dt.timedelta(minutes=30) <= e < NOW + MAX_LIFETIME for e in expiries
    )
    runs = Counter(int((e - NOW).total_seconds() // 3600) for e in expiries)  # the hour each one comes due
    assert len(runs) > 60  # spread over most of the 72 hours
    assert max(runs.values()) < 50  # where without the spread one run would meet all 1,000


def test_the_renewal_timer_hands_renewals_to_the_worker_at_a_steady_pace() -> None:
    assert renewal_delays(0) == []
    delays = renewal_delays(35)
    assert delays[:RENEWALS_PER_SECOND] == [0] * RENEWALS_PER_SECOND
    assert Counter(delays) == {0: 10, 1: 10, 2: 10, 3: 5}
    assert renewal_delays(1400)[-1] == 139  # 1,400 due in a run (100,000 mailboxes): all queued within 2.5 min


def test_a_mailbox_key_is_the_same_however_its_ids_are_cased() -> None:
    tenant, oid = "84BD8158-6D4D-4958-8B9F-9D6445542F95", "622EAAFF-0683-4862-9DE4-F2EC83C2BD98"
    assert mailbox_key(tenant, oid) == mailbox_key(tenant.lower(), f" {oid.lower()} ")
    assert mailbox_key(tenant, oid) != mailbox_key(oid, tenant)


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
