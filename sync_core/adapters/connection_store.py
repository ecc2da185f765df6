"""Connections, mailboxes and subscriptions in Azure Tables.

``Connections``: PartitionKey = user id, RowKey = connection id, so a user's connections are one partition and
Update Email (activate one, demote the other) is one atomic transaction. ``Subscriptions``: PartitionKey =
subscription id, so the webhook trusts a notification with a single point read; the row names its mailbox.
``Mailboxes``: PartitionKey = mailbox key; the row with RowKey "" holds the mailbox's subscription id and when it
last heard from Graph, one row per connection that syncs it (RowKey = connection id) names that connection's user
and when its sign-in joined.
A mailbox is one partition: one query reads its subscription and its connections together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc
from sync_core.connections import Connection, Status
from sync_core.subscriptions import Subscription
from sync_core.table_limits import clip

_ROW = ""  # single-row partitions use an empty RowKey
REASON_UNITS = 2048  # a status reason is shown to the user: its start says it (table_limits)


_CONTENDED_TRIES = 10


def _connection_entity(c: Connection) -> dict[str, Any]:
    return {
        "PartitionKey": c.user_id,
        "RowKey": c.connection_id,
        "AccountId": c.account_id,
        "Address": c.address,
        "TenantId": c.tenant_id,
        "UserObjectId": c.user_object_id,
        "HomeAccountId": c.home_account_id,
        "Status": c.status.value,
        "Active": c.active,
        "ConnectedAt": c.connected_at,
        "UpdatedAt": c.updated_at,
        "StatusReason": clip(c.status_reason, REASON_UNITS),  # the identity platform's error text
        "SentItemsFolderId": c.sent_items_folder_id,
        "SyncFrom": c.sync_from,
    }


def _connection(e: dict[str, Any]) -> Connection:
    return Connection(
        user_id=e["PartitionKey"],
        account_id=e.get("AccountId", ""),
        connection_id=e["RowKey"],
        address=e["Address"],
        tenant_id=e["TenantId"],
        user_object_id=e["UserObjectId"],
        home_account_id=e.get("HomeAccountId", ""),
        status=Status(e["Status"]),
        active=bool(e.get("Active")),
        connected_at=utc(e["ConnectedAt"]),
        updated_at=utc(e["UpdatedAt"]),
        status_reason=e.get("StatusReason") or "",
        sent_items_folder_id=e.get("SentItemsFolderId") or "",
        # Rows written before it was kept: the first sign-in is the earliest mail that may sync (R4, R8).
        sync_from=utc(e["SyncFrom"]) if e.get("SyncFrom") else utc(e["ConnectedAt"]),
    )


class ConnectionStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table: TableClient = tables.get_table_client(names.TABLE_CONNECTIONS)

    def for_user(self, user_id: str) -> list[Connection]:
        rows = self._table.query_entities("PartitionKey eq @user", parameters={"user": user_id})
        return sorted((_connection(e) for e in rows), key=lambda c: c.connected_at)

    def get(self, user_id: str, connection_id: str) -> Connection | None:
        try:
            return _connection(self._table.get_entity(user_id, connection_id))
        except ResourceNotFoundError:
            return None

    def save(self, connections: list[Connection]) -> None:
        """Write one user's changed connections atomically (one partition, one transaction)."""
        if not connections:
            return
        if len({c.user_id for c in connections}) != 1:
            raise ValueError("a transaction holds one user's connections only")
        self._table.submit_transaction(
            [("upsert", _connection_entity(c), {"mode": UpdateMode.REPLACE}) for c in connections]
        )

    def all_syncing(self) -> list[Connection]:
        """Every connection that still syncs (timers only: a table scan is fine there, never on a hot path)."""
        rows = self._table.query_entities("Status ne @gone", parameters={"gone": Status.DISCONNECTED.value})
        return [_connection(e) for e in rows]

    def pages(self, page_size: int = 1000) -> Iterator[list[Connection]]:
        """Every connection, every status, a page at a time: a whole-table scan, for operators' tools only."""
        for page in self._table.list_entities(results_per_page=page_size).by_page():
            yield [_connection(e) for e in page]

    def find(self, connection_id_or_address: str) -> list[Connection]:
        """Connections with this id, or of this mailbox address in any case (the row keeps the mailbox's own
        casing, which a filter would have to match exactly), across users (a scan: operators' tools only)."""
        address = connection_id_or_address.casefold()
        return [
            c
            for page in self.pages()
            for c in page
            if c.connection_id == connection_id_or_address or c.address.casefold() == address
        ]

    def learn_sent_items_folder(self, user_id: str, connection_id: str, folder_id: str) -> None:
        """Remember the id of the mailbox's Sent Items folder (folder ids never change, CONTRACT.md section 4)."""
        entity = {"PartitionKey": user_id, "RowKey": connection_id, "SentItemsFolderId": folder_id}
        with contextlib.suppress(ResourceNotFoundError):  # deleted meanwhile: nothing to remember
            self._table.update_entity(entity, mode=UpdateMode.MERGE)


def _subscription_entity(s: Subscription) -> dict[str, Any]:
    return {
        "PartitionKey": s.subscription_id,
        "RowKey": _ROW,
        "MailboxKey": s.mailbox,
        "TenantId": s.tenant_id,
        "ClientState": s.client_state,
        "Resource": s.resource,
        "ExpiresAt": s.expires_at,
    }


def _subscription(e: dict[str, Any]) -> Subscription:
    return Subscription(
        subscription_id=e["PartitionKey"],
        mailbox=e["MailboxKey"],
        tenant_id=e["TenantId"],
        client_state=e["ClientState"],
        resource=e["Resource"],
        expires_at=utc(e["ExpiresAt"]),
    )


class SubscriptionStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table: TableClient = tables.get_table_client(names.TABLE_SUBSCRIPTIONS)
        self._mailboxes = MailboxStore(tables)

    def get(self, subscription_id: str) -> Subscription | None:
        try:
            return _subscription(self._table.get_entity(subscription_id, _ROW))
        except ResourceNotFoundError:
            return None

    def save(self, subscription: Subscription) -> None:
        self._table.upsert_entity(_subscription_entity(subscription), mode=UpdateMode.REPLACE)

    def delete(self, subscription_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):  # gone already: what was wanted
            self._table.delete_entity(subscription_id, _ROW)

    def of_mailbox(self, mailbox: str) -> Subscription | None:
        """The mailbox's subscription, by the id its mailbox row names (two point reads)."""
        record = self._mailboxes.get(mailbox)
        return self.get(record.subscription_id) if record and record.subscription_id else None

    def for_connection(self, connection_id: str) -> list[Subscription]:
        """The subscription of each mailbox the connection is a member of (a scan of Mailboxes by RowKey: tests
        and operators' tools only)."""
        found = []
        for mailbox in self._mailboxes.of_connection(connection_id):
            if (subscription := self.of_mailbox(mailbox)) is not None:
                found.append(subscription)
        return found

    def all(self) -> list[Subscription]:
        """Every subscription (a scan: operators' tools only; one row per mailbox that syncs)."""
        return [_subscription(e) for e in self._table.list_entities()]

    def expiring_before(self, moment: dt.datetime) -> list[Subscription]:
        """For the renewal timer: every subscription that expires before ``moment``."""
        rows = self._table.query_entities("ExpiresAt le @at", parameters={"at": moment})
        return [_subscription(e) for e in rows]


@dataclass(frozen=True)
class MailboxRecord:
    mailbox: str
    subscription_id: str = ""  # "" while the mailbox has none (being created, or its creation failed)
    last_notification_at: dt.datetime | None = None
    etag: str = ""  # every join changes it: a decision taken on this record is written only if it is unchanged


@dataclass(frozen=True)
class Member:
    """A connection that syncs the mailbox, or is being connected to it: its user, its id (the key of its row in
    ``Connections``), and when its sign-in joined the mailbox (None on a row written before that was recorded)."""

    user_id: str
    connection_id: str
    joined_at: dt.datetime | None = None
    etag: str = ""


def _record(e: TableEntity) -> MailboxRecord:
    at = e.get("LastNotificationAt")
    return MailboxRecord(e["PartitionKey"], e.get("SubscriptionId") or "", utc(at) if at else None, _etag(e))


def _etag(e: TableEntity) -> str:
    return str(e.metadata["etag"])


class MailboxStore:
    """Each mailbox's subscription and the connections that sync it (R1: one mailbox, several users).

    A join writes its member row and touches the mailbox row in one transaction, so the mailbox row's etag tells
    whoever decides about the mailbox's subscription (the last user leaving, a sign-in recording the one it made)
    whether anyone joined since it looked: ``forget`` and ``point_at`` write only onto the row they read."""

    def __init__(self, tables: TableServiceClient) -> None:
        self._table: TableClient = tables.get_table_client(names.TABLE_MAILBOXES)

    def read(self, mailbox: str) -> tuple[MailboxRecord | None, list[Member]]:
        """The mailbox row and its members: one single-partition query."""
        record: MailboxRecord | None = None
        members: list[Member] = []
        for e in self._table.query_entities("PartitionKey eq @mailbox", parameters={"mailbox": mailbox}):
            if e["RowKey"] == _ROW:
                record = _record(e)
            else:
                joined = e.get("JoinedAt")
                members.append(Member(e["UserId"], e["RowKey"], utc(joined) if joined else None, _etag(e)))
        return record, members

    def get(self, mailbox: str) -> MailboxRecord | None:
        try:
            return _record(self._table.get_entity(mailbox, _ROW))
        except ResourceNotFoundError:
            return None

    def members(self, mailbox: str) -> list[Member]:
        return self.read(mailbox)[1]

    def join(self, mailbox: str, user_id: str, connection_id: str, at: dt.datetime) -> None:
        """The connection's member row, and the mailbox row touched (created when missing): one transaction."""
        member = {"PartitionKey": mailbox, "RowKey": connection_id, "UserId": user_id, "JoinedAt": at}
        touched = {"PartitionKey": mailbox, "RowKey": _ROW, "JoinedAt": at}
        self._table.submit_transaction(
            [("upsert", member, {"mode": UpdateMode.REPLACE}), ("upsert", touched, {"mode": UpdateMode.MERGE})]
        )

    def leave(self, mailbox: str, connection_id: str, etag: str = "") -> None:
        """The connection's member row goes (with ``etag``: only if it is still the row that was read)."""
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):  # gone, or joined again since
            if etag:
                self._table.delete_entity(
                    mailbox, connection_id, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                self._table.delete_entity(mailbox, connection_id)

    def point_at(self, mailbox: str, subscription_id: str, replacing: str = "") -> bool:
        """Record ``subscription_id`` as the mailbox's, if the mailbox row names none, it, or ``replacing`` (the
        one it replaces). False when the row names another (a sign-in that raced this one made its own the
        mailbox's) or is gone (the mailbox's last user left)."""
        for _ in range(_CONTENDED_TRIES):  # the webhook touches the row on every notification batch
            record = self.get(mailbox)
            if record is None or record.subscription_id not in ("", subscription_id, replacing):
                return False
            entity = {"PartitionKey": mailbox, "RowKey": _ROW, "SubscriptionId": subscription_id}
            try:
                self._table.update_entity(
                    entity, mode=UpdateMode.MERGE, etag=record.etag, match_condition=MatchConditions.IfNotModified
                )
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        raise ResourceModifiedError(f"mailbox {mailbox}: its row kept changing while its subscription was recorded")

    def forget(self, record: MailboxRecord) -> bool:
        """The mailbox row (its subscription and last notification) goes, if unchanged since ``record`` was read;
        members are left as they are. False when it changed (someone joined) or is gone."""
        try:
            self._table.delete_entity(
                record.mailbox, _ROW, etag=record.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def touch(self, mailbox: str, at: dt.datetime) -> None:
        """Record when the mailbox last heard from Graph (the connections read shows it)."""
        entity = {"PartitionKey": mailbox, "RowKey": _ROW, "LastNotificationAt": at}
        with contextlib.suppress(ResourceNotFoundError):  # forgotten meanwhile: nothing to record
            self._table.update_entity(entity, mode=UpdateMode.MERGE)

    def of_connection(self, connection_id: str) -> list[str]:
        """The mailboxes a connection is a member of (a scan by RowKey: tests and operators' tools only)."""
        rows = self._table.query_entities("RowKey eq @cid", parameters={"cid": connection_id}, select=["PartitionKey"])
        return [e["PartitionKey"] for e in rows]

    def records(self) -> list[MailboxRecord]:
        """Every mailbox row (a scan: operators' tools only)."""
        return [_record(e) for e in self._table.query_entities("RowKey eq @row", parameters={"row": _ROW})]
