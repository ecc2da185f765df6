"""Connect, Update Email, reconnect, grant loss and disconnect as decisions over a user's connections."""

import datetime as dt
from dataclasses import replace

from sync_core.connections import (
    GraphIdentity,
    Status,
    active_connection,
    connection_id_for,
    on_connected,
    on_disconnected,
    on_grant_lost,
)

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
ALICE_WORK = GraphIdentity("tenant", "oid-work", "alice@school.example", "oid-work.tenant")
ALICE_STUDIO = GraphIdentity("tenant", "oid-studio", "alice@studio.example", "oid-studio.tenant")


def test_first_connect_creates_one_active_connected_connection() -> None:
    [conn] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    assert (conn.address, conn.status, conn.active, conn.connected_at) == (
        ALICE_WORK.address,
        Status.CONNECTED,
        True,
        T0,
    )
    assert conn.connection_id == connection_id_for("alice", "tenant", "oid-work")


def test_update_email_makes_the_new_mailbox_active_and_keeps_the_old_one_connected() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    changed = on_connected([work], "alice", "acct", ALICE_STUDIO, T1)
    by_address = {c.address: c for c in changed}
    assert by_address["alice@studio.example"].active
    assert not by_address["alice@school.example"].active
    assert by_address["alice@school.example"].status is Status.CONNECTED
    assert active_connection(changed) == by_address["alice@studio.example"]


def test_reconnecting_the_same_mailbox_updates_it_instead_of_adding_one() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    lost = on_grant_lost(work, "invalid_grant", T0)
    [again] = on_connected([lost], "alice", "acct", ALICE_WORK, T1)
    assert again.connection_id == work.connection_id
    assert (again.status, again.status_reason, again.connected_at, again.updated_at) == (Status.CONNECTED, "", T0, T1)


def test_the_same_mailbox_connected_by_two_users_is_two_connections() -> None:
    assert connection_id_for("alice", "t", "o") != connection_id_for("bob", "t", "o")


def test_a_lost_grant_is_visible_and_a_disconnected_connection_stays_disconnected() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    lost = on_grant_lost(work, "AADSTS70000: grant revoked", T1)
    assert (lost.status, lost.status_reason, lost.can_send, lost.syncs) == (
        Status.NEEDS_RECONNECT,
        "AADSTS70000: grant revoked",
        False,
        True,
    )
    gone = on_disconnected(lost, T1)
    assert (gone.status, gone.active, gone.can_send, gone.syncs) == (Status.DISCONNECTED, False, False, False)
    assert on_grant_lost(gone, "later", T1) == gone


def test_no_active_connection_after_disconnecting_the_active_one() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    assert active_connection([on_disconnected(work, T1)]) is None
    assert active_connection([replace(work, active=False)]) is None


def test_repairing_a_lost_grant_of_an_older_mailbox_keeps_the_active_address() -> None:
    """R3: only connecting a new address (or the user's choice) changes which one is active."""
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    studio, demoted_work = on_connected([work], "alice", "acct", ALICE_STUDIO, T0)
    lost = on_grant_lost(demoted_work, "invalid_grant", T1)
    [repaired] = on_connected([lost, studio], "alice", "acct", ALICE_WORK, T1)
    assert (repaired.address, repaired.status, repaired.active) == (ALICE_WORK.address, Status.CONNECTED, False)
    assert active_connection([repaired, studio]) == studio


def test_repairing_the_active_mailbox_keeps_it_active() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    [repaired] = on_connected([on_grant_lost(work, "invalid_grant", T1)], "alice", "acct", ALICE_WORK, T1)
    assert (repaired.status, repaired.active) == (Status.CONNECTED, True)


def test_reconnecting_a_disconnected_mailbox_is_connecting_it_anew_and_makes_it_active() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    studio, demoted_work = on_connected([work], "alice", "acct", ALICE_STUDIO, T0)
    gone = on_disconnected(demoted_work, T1)
    again, demoted_studio = on_connected([gone, studio], "alice", "acct", ALICE_WORK, T1)
    assert (again.address, again.status, again.active) == (ALICE_WORK.address, Status.CONNECTED, True)
    assert (demoted_studio.address, demoted_studio.active) == (ALICE_STUDIO.address, False)


def test_repairing_a_mailbox_becomes_active_when_no_other_address_is() -> None:
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    studio, demoted_work = on_connected([work], "alice", "acct", ALICE_STUDIO, T0)
    lost = on_grant_lost(demoted_work, "invalid_grant", T1)
    [repaired] = on_connected([lost, on_disconnected(studio, T1)], "alice", "acct", ALICE_WORK, T1)
    assert repaired.active


def test_signing_in_to_an_older_connected_mailbox_switches_back_to_it() -> None:
    """R3: the user chose it again (the callback says connected with its address): mail goes out from it now."""
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    studio, demoted_work = on_connected([work], "alice", "acct", ALICE_STUDIO, T0)
    again, demoted_studio = on_connected([demoted_work, studio], "alice", "acct", ALICE_WORK, T1)
    assert (again.address, again.status, again.active) == (ALICE_WORK.address, Status.CONNECTED, True)
    assert (demoted_studio.address, demoted_studio.status, demoted_studio.active) == (
        ALICE_STUDIO.address,
        Status.CONNECTED,
        False,
    )
    assert active_connection([again, demoted_studio]) == again


def test_sync_starts_at_the_first_sign_in_and_again_after_a_disconnect_but_not_after_a_repair() -> None:
    """R8: mail of a disconnected time never syncs; mail of a lost grant does, once the user reconnects."""
    late = T1.replace(microsecond=700_000)
    [work] = on_connected([], "alice", "acct", ALICE_WORK, T0)
    assert work.sync_from == T0
    [repaired] = on_connected([on_grant_lost(work, "invalid_grant", T1)], "alice", "acct", ALICE_WORK, late)
    assert repaired.sync_from == T0
    [chosen_again] = on_connected([repaired], "alice", "acct", ALICE_WORK, late)
    assert chosen_again.sync_from == T0
    [back] = on_connected([on_disconnected(work, T1)], "alice", "acct", ALICE_WORK, late)
    assert back.sync_from == T1  # the whole second: Graph's receivedDateTime has no finer grain
