"""The soak in ``make test``: a small seeded ``make soak`` (4 mailboxes, 120 messages) on its own Azurite, with
Graph's 429s and 503s, dropped, duplicated and reordered notifications, and host B killed (SIGKILL) halfway.
What a user would see is read through Enrollio's read API: every reply once, no Outlook-started or unrelated
mail, every over-cap reply skipped with its reason; what an operator would see: nothing in poison."""

from __future__ import annotations

from collections import Counter

import pytest

from devtools.soak import Kind, Report, SoakOptions, judge, message_gets, run_soak


@pytest.mark.timeout(420)  # about a minute; under load more: it fails on its own figures, not on the clock
def test_small_soak_loses_nothing_and_stores_nothing_twice_through_faults_and_a_killed_host() -> None:
    # One sender (the 4 mailboxes' mail in one order), no 10-minute wait for host B's leased messages.
    small = SoakOptions(
        mailboxes=4, messages=120, seed=11, senders=1, drain=False, stall_seconds=5, converge_timeout=120
    )
    report = run_soak(small)

    # The soak did what it says: Graph refused, notifications were lost, host B died while it was working.
    assert report.throttled > 0 and report.unavailable > 0
    assert report.notifications_dropped > 0
    assert report.killed_after > 0
    assert report.push_stored < report.expected, "push alone recovered everything: the catch-up was not tested"
    # What the users see.
    assert report.missing == []
    assert report.duplicated == []
    assert report.wrongly_stored == []
    assert report.stored_once == report.expected > 60
    assert report.skipped_right == report.oversize > 0
    # What the operator sees.
    assert report.poison == 0, report.failures
    assert report.converge_seconds is not None
    assert report.ok
    # Every stored message was fetched at least once (the figure is printed; fetching again is not a failure).
    assert len(report.message_gets) >= report.expected


def test_the_soak_judges_missing_duplicated_and_wrongly_stored_mail() -> None:
    sent = {
        1: Kind.CONTACT_REPLY,
        2: Kind.OUTLOOK_REPLY,
        3: Kind.CONTACT_REPLY,
        4: Kind.OUTLOOK_STARTED,
        5: Kind.UNRELATED,
        6: Kind.OVERSIZE,
        7: Kind.OVERSIZE,
    }
    found = Counter({1: 1, 2: 2, 4: 1, 7: 1})  # 3 lost, 2 twice, Outlook-started 4 and over-cap 7 stored
    report = Report()

    judge(report, sent, found, {6: "attachment_too_large", 7: "attachment_too_large"})

    assert (report.expected, report.stored_once, report.missing, report.duplicated) == (3, 1, [3], [2])
    assert report.wrongly_stored == ["[soak-4] Outlook-started stored 1x", "[soak-7] over-cap reply stored 1x"]
    assert (report.skipped_right, report.oversize) == (2, 2)
    assert not report.ok


def test_an_over_cap_reply_skipped_for_another_reason_is_wrong() -> None:
    report = Report()

    judge(report, {6: Kind.OVERSIZE}, Counter(), {6: "graph_error"})

    assert report.wrongly_stored == ["[soak-6] over-cap reply: skip reason 'graph_error'"]
    assert not report.ok


def test_a_message_stored_in_a_second_thread_is_a_duplicate_though_each_thread_shows_it_once() -> None:
    """The read API shows reply 1 once in its thread; a second row of it in another thread (or for another user)
    is still the message stored twice."""
    report = Report()

    judge(report, {1: Kind.CONTACT_REPLY, 2: Kind.CONTACT_REPLY}, Counter({1: 1, 2: 1}), {}, Counter({1: 2, 2: 1}))

    assert (report.stored_once, report.duplicated) == (1, [1])
    assert not report.ok


def test_the_soak_counts_the_gets_of_each_message_not_its_attachments_or_the_delta() -> None:
    paths = [
        "/v1.0/users/u1/messages/AAA",
        "/v1.0/users/u1/messages/AAA",
        "/v1.0/users/u1/messages/AAA/attachments",
        "/v1.0/users/u1/messages/BBB",
        "/v1.0/users/u1/mailFolders/inbox/messages/delta",
        "/v1.0/users/u1/messages/delta",
    ]
    assert message_gets(paths) == Counter({"AAA": 2, "BBB": 1})
