"""Every sender-routing case (R7, R3, R8) as a row of one table."""

from __future__ import annotations

import datetime as dt

import pytest

from sync_core.connections import GraphIdentity, Status, on_connected, on_disconnected, on_grant_lost
from sync_core.routing import REASONS, Kind, route

T0 = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
[OLD] = on_connected([], "u", "a", GraphIdentity("t", "o1", "Alice@School.example", "o1.t"), T0)
NEW, OLD_DEMOTED = on_connected([OLD], "u", "a", GraphIdentity("t", "o2", "alice@studio.example", "o2.t"), T0)
LOST = on_grant_lost(OLD, "invalid_grant", T0)
GONE = on_disconnected(OLD, T0)

CASES = [
    # (case, kind, connections, from field, thread's connection, is reply, expected sender address, reason)
    (
        "workflow, even when connected",
        Kind.WORKFLOW,
        [OLD],
        "alice@school.example",
        None,
        False,
        None,
        "workflow_uses_account_provider",
    ),
    ("workflow reply in a thread", Kind.WORKFLOW, [OLD], None, OLD, True, None, "workflow_uses_account_provider"),
    (
        "bulk, From equals Outlook (case, spaces)",
        Kind.BULK,
        [OLD],
        "  ALICE@school.example ",
        None,
        False,
        "Alice@School.example",
        "bulk_from_matches_outlook",
    ),
    ("bulk, From blank", Kind.BULK, [OLD], "  ", None, False, None, "bulk_from_blank"),
    ("bulk, From missing", Kind.BULK, [OLD], None, None, False, None, "bulk_from_blank"),
    (
        "bulk, another From",
        Kind.BULK,
        [OLD],
        "office@school.example",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk, From is the previous address",
        Kind.BULK,
        [NEW, OLD_DEMOTED],
        "alice@school.example",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk, From matches but needs reconnect",
        Kind.BULK,
        [LOST],
        "alice@school.example",
        None,
        False,
        None,
        "connection_needs_reconnect",
    ),
    (
        "bulk, no connection",
        Kind.BULK,
        [],
        "alice@school.example",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "individual, connected",
        Kind.INDIVIDUAL,
        [OLD],
        None,
        None,
        False,
        "Alice@School.example",
        "individual_via_outlook",
    ),
    (
        "individual after Update Email",
        Kind.INDIVIDUAL,
        [NEW, OLD_DEMOTED],
        None,
        None,
        False,
        "alice@studio.example",
        "individual_via_outlook",
    ),
    ("individual, no connection", Kind.INDIVIDUAL, [], None, None, False, None, "no_connected_outlook"),
    ("individual, needs reconnect", Kind.INDIVIDUAL, [LOST], None, None, False, None, "connection_needs_reconnect"),
    ("individual, after disconnect", Kind.INDIVIDUAL, [GONE], None, None, False, None, "no_connected_outlook"),
    (
        "reply in an old thread after Update Email",
        Kind.INDIVIDUAL,
        [NEW, OLD_DEMOTED],
        None,
        OLD_DEMOTED,
        True,
        "Alice@School.example",
        "reply_in_thread",
    ),
    (
        "reply, thread's connection disconnected",
        Kind.INDIVIDUAL,
        [NEW, GONE],
        None,
        GONE,
        True,
        None,
        "connection_disconnected",
    ),
    (
        "reply, thread's connection needs reconnect",
        Kind.INDIVIDUAL,
        [NEW, LOST],
        None,
        LOST,
        True,
        None,
        "connection_needs_reconnect",
    ),
    ("reply, thread unknown", Kind.INDIVIDUAL, [NEW], None, None, True, None, "thread_has_no_connection"),
    # R7's rule first, then the thread: a bulk reply's From must be the address its thread's mailbox sends from.
    ("bulk reply, From blank", Kind.BULK, [OLD], " ", OLD, True, None, "bulk_from_blank"),
    ("bulk reply, From missing", Kind.BULK, [OLD], None, OLD, True, None, "bulk_from_blank"),
    (
        "bulk reply, another From",
        Kind.BULK,
        [OLD],
        "office@school.example",
        OLD,
        True,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk reply, From is the thread's address",
        Kind.BULK,
        [OLD],
        "alice@SCHOOL.example",
        OLD,
        True,
        "Alice@School.example",
        "reply_in_thread",
    ),
    (
        "bulk reply in an old thread after Update Email, From is the old address",
        Kind.BULK,
        [NEW, OLD_DEMOTED],
        '"Alice" <alice@school.example>',
        OLD_DEMOTED,
        True,
        "Alice@School.example",
        "reply_in_thread",
    ),
    (
        "bulk reply in an old thread after Update Email, From is the new (active) address",
        Kind.BULK,
        [NEW, OLD_DEMOTED],
        "alice@studio.example",
        OLD_DEMOTED,
        True,
        None,
        "bulk_from_not_thread_address",  # connected, but not the address the reply goes out from
    ),
    (
        "bulk reply in an old thread, From is a disconnected address of the user",
        Kind.BULK,
        [NEW, GONE],
        "alice@school.example",
        NEW,
        True,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk reply, From matches but the thread's connection needs reconnect",
        Kind.BULK,
        [NEW, LOST],
        "alice@school.example",
        LOST,
        True,
        None,
        "connection_needs_reconnect",
    ),
    (
        "bulk, From in the name-and-address form",
        Kind.BULK,
        [OLD],
        "Alice Doe <ALICE@school.example>",
        None,
        False,
        "Alice@School.example",
        "bulk_from_matches_outlook",
    ),
    (
        "bulk, From quoted name with a comma",
        Kind.BULK,
        [OLD],
        '  "Doe, Alice" <alice@school.example>  ',
        None,
        False,
        "Alice@School.example",
        "bulk_from_matches_outlook",
    ),
    (
        "bulk, From whose name is the address but whose address is another",
        Kind.BULK,
        [OLD],
        "alice@school.example <office@school.example>",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    ("bulk, From is a name only", Kind.BULK, [OLD], "Alice Doe", None, False, None, "bulk_from_not_connected_address"),
    (
        "bulk, From names two addresses, the connected one last",
        Kind.BULK,
        [OLD],
        "Office <office@school.example>, Alice <alice@school.example>",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk, From names two addresses, the connected one first",
        Kind.BULK,
        [OLD],
        "Alice <alice@school.example>, Office <office@school.example>",
        None,
        False,
        None,
        "bulk_from_not_connected_address",
    ),
    (
        "bulk, From with a quoted name holding angle brackets",
        Kind.BULK,
        [OLD],
        '"Office <office@school.example>" <alice@school.example>',
        None,
        False,
        "Alice@School.example",
        "bulk_from_matches_outlook",
    ),
    (
        "bulk, From with an unquoted comma in its name",
        Kind.BULK,
        [OLD],
        "Doe, Alice <alice@school.example>",
        None,
        False,
        "Alice@School.example",
        "bulk_from_matches_outlook",
    ),
]


@pytest.mark.parametrize(
    ("case", "kind", "connections", "from_field", "thread", "reply", "sender", "reason"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_routing(case, kind, connections, from_field, thread, reply, sender, reason) -> None:  # type: ignore[no-untyped-def]
    decided = route(kind, connections, from_field, thread, reply)
    assert (decided.connection.address if decided.connection else None, decided.reason) == (sender, reason)
    assert decided.via_outlook == (sender is not None)
    assert decided.reason in REASONS  # the OpenAPI document's list


def test_every_reason_is_reached_by_a_row_of_the_table() -> None:
    assert {c[-1] for c in CASES} == set(REASONS)


def test_the_demoted_connection_is_still_connected() -> None:
    assert OLD_DEMOTED.status is Status.CONNECTED
    assert not OLD_DEMOTED.active
