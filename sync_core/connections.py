"""Per-user Outlook connections (R1, R2, R3, R8): the model and the pure decisions about them.

A user may hold several connections (Update Email keeps the previous one); exactly one connected connection is
*active*: the one new outbound mail goes through. A connection is identified by the user and the Graph identity
(tenant + user object id), so reconnecting the same mailbox updates it instead of adding another. Several users
may connect one mailbox (a shared front-desk account, R1): each has a connection of its own, and the mailbox
(``mailbox_key``) is what they share at Graph.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    CONNECTED = "connected"
    NEEDS_RECONNECT = "needs_reconnect"  # the grant was revoked or expired: visible, never a silent stop (R2)
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class GraphIdentity:
    """Who signed in, from the id token and ``/me``."""

    tenant_id: str
    user_object_id: str
    address: str  # mail, else userPrincipalName
    home_account_id: str  # MSAL's account id ("uid.utid"), to find the account in the token cache


@dataclass(frozen=True)
class Connection:
    user_id: str
    account_id: str
    connection_id: str
    address: str
    tenant_id: str
    user_object_id: str
    home_account_id: str
    status: Status
    active: bool
    connected_at: dt.datetime
    updated_at: dt.datetime
    status_reason: str = ""
    sent_items_folder_id: str = ""  # tells the user's own mail (R5); learnt from Graph, "" until then
    # R8: mail received before this moment never syncs. The first sign-in, or the sign-in after a disconnect;
    # a repaired grant keeps it (mail of a lost grant syncs). None on rows from before it was kept: connected_at.
    sync_from: dt.datetime | None = None

    @property
    def mailbox(self) -> str:
        """The mailbox this connection syncs, as every connection of it names it (``mailbox_key``)."""
        return mailbox_key(self.tenant_id, self.user_object_id)

    @property
    def can_send(self) -> bool:
        return self.status is Status.CONNECTED

    @property
    def syncs(self) -> bool:
        """Inbound mail of this connection's threads is synced (R8: not after disconnect)."""
        return self.status is not Status.DISCONNECTED


def mailbox_key(tenant_id: str, user_object_id: str) -> str:
    """One mailbox, however many users connect it: its tenant and user object id (GUIDs, in any case) as one key."""
    return f"{tenant_id.strip().lower()}_{user_object_id.strip().lower()}"


def connection_id_for(user_id: str, tenant_id: str, user_object_id: str) -> str:
    """Stable id: the same user reconnecting the same mailbox always lands on the same connection."""
    return hashlib.sha256(f"{user_id}\n{tenant_id}\n{user_object_id}".encode()).hexdigest()[:32]


def on_connected(
    existing: list[Connection],
    user_id: str,
    account_id: str,
    who: GraphIdentity,
    now: dt.datetime,
    sent_items_folder_id: str = "",
) -> list[Connection]:
    """The user's connections after a successful sign-in: the signed-in mailbox is connected.

    R3: signing in to a mailbox is the user's choice of sending address, so it becomes the active one: a new
    mailbox, one the user had disconnected, or an older one that is still connected (switching back). Every other
    connection keeps its status (the previous mailbox stays connected and keeps syncing its threads) but stops
    being active. The one exception is a repair: signing in again to a mailbox whose grant was lost (needs
    reconnect) fixes it and leaves the choice of active address alone, unless no other address is active.
    Returns only the rows that change.
    """
    cid = connection_id_for(user_id, who.tenant_id, who.user_object_id)
    current = next((c for c in existing if c.connection_id == cid), None)
    if current is not None and current.status is Status.NEEDS_RECONNECT:  # a repair: the user's choice stands
        others = [c for c in existing if c.connection_id != cid]
        active = current.active or active_connection(others) is None
    else:  # a new mailbox, one connected again after a disconnect, or a connected one chosen again
        active = True
    if current is None or current.status is Status.DISCONNECTED:
        # Whole seconds: Graph shows receivedDateTime to the second, so mail of the sign-in's own second syncs.
        sync_from = now.replace(microsecond=0)
    else:  # a repair, or the user choosing it again: nothing was missed on purpose
        sync_from = current.sync_from or current.connected_at
    connected = Connection(
        user_id=user_id,
        account_id=account_id,
        connection_id=cid,
        address=who.address,
        tenant_id=who.tenant_id,
        user_object_id=who.user_object_id,
        home_account_id=who.home_account_id,
        status=Status.CONNECTED,
        active=active,
        connected_at=current.connected_at if current else now,
        updated_at=now,
        sent_items_folder_id=sent_items_folder_id or (current.sent_items_folder_id if current else ""),
        sync_from=sync_from,
    )
    if not active:
        return [connected]
    demoted = [replace(c, active=False, updated_at=now) for c in existing if c.active and c.connection_id != cid]
    return [connected, *demoted]


def on_disconnected(connection: Connection, now: dt.datetime) -> Connection:
    """R8: a disconnected connection neither sends nor syncs, and is no longer active."""
    return replace(connection, status=Status.DISCONNECTED, active=False, updated_at=now, status_reason="")


def on_grant_lost(connection: Connection, reason: str, now: dt.datetime) -> Connection:
    """R2: a revoked or expired grant is a visible state, never a silent stop. Activeness is kept: the user's
    choice of sending address stands, and sending falls back to the account provider until they reconnect."""
    if connection.status is Status.DISCONNECTED:
        return connection
    return replace(connection, status=Status.NEEDS_RECONNECT, status_reason=reason, updated_at=now)


def active_connection(connections: list[Connection]) -> Connection | None:
    return next((c for c in connections if c.active and c.status is not Status.DISCONNECTED), None)
