"""Connections and subscriptions in Azure Tables.

``Connections``: PartitionKey = user id, RowKey = connection id, so a user's connections are one partition and
Update Email (activate one, demote the other) is one atomic transaction. ``Subscriptions``: PartitionKey =
subscription id, so the webhook trusts a notification with a single point read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc
from sync_core.connections import Connection, Status
from sync_core.subscriptions import Subscription
from sync_core.table_limits import clip

_ROW = ""  # single-row partitions use an empty RowKey
REASON_UNITS = 2048  # a status reason is shown to the user: its start says it (table_limits)


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
        "LastNotificationAt": c.last_notification_at,
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
        last_notification_at=utc(e["LastNotificationAt"]) if e.get("LastNotificationAt") else None,
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

    def touch_notification(self, user_id: str, connection_id: str, at: dt.datetime) -> None:
        """Record when the connection last heard from Graph (shown by the read API)."""
        entity = {"PartitionKey": user_id, "RowKey": connection_id, "LastNotificationAt": at}
        with contextlib.suppress(ResourceNotFoundError):  # deleted meanwhile: nothing to record
            self._table.update_entity(entity, mode=UpdateMode.MERGE)


def _subscription_entity(s: Subscription) -> dict[str, Any]:
    return {
        "PartitionKey": s.subscription_id,
        "RowKey": _ROW,
        "UserId": s.user_id,
        "ConnectionId": s.connection_id,
        "TenantId": s.tenant_id,
        "ClientState": s.client_state,
        "Resource": s.resource,
        "ExpiresAt": s.expires_at,
    }


def _subscription(e: dict[str, Any]) -> Subscription:
    return Subscription(
        subscription_id=e["PartitionKey"],
        user_id=e["UserId"],
        connection_id=e["ConnectionId"],
        tenant_id=e["TenantId"],
        client_state=e["ClientState"],
        resource=e["Resource"],
        expires_at=utc(e["ExpiresAt"]),
    )


class SubscriptionStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table: TableClient = tables.get_table_client(names.TABLE_SUBSCRIPTIONS)

    def get(self, subscription_id: str) -> Subscription | None:
        try:
            return _subscription(self._table.get_entity(subscription_id, _ROW))
        except ResourceNotFoundError:
            return None

    def save(self, subscription: Subscription) -> None:
        self._table.upsert_entity(_subscription_entity(subscription), mode=UpdateMode.REPLACE)

    def delete(self, subscription_id: str) -> None:
        self._table.delete_entity(subscription_id, _ROW)

    def for_connection(self, connection_id: str) -> list[Subscription]:
        # Off the hot path (connect, disconnect, lifecycle): a filtered query is fine here.
        rows = self._table.query_entities("ConnectionId eq @cid", parameters={"cid": connection_id})
        return [_subscription(e) for e in rows]

    def all(self) -> list[Subscription]:
        """Every subscription (a scan: operators' tools only; one row per connection that syncs)."""
        return [_subscription(e) for e in self._table.list_entities()]

    def expiring_before(self, moment: dt.datetime) -> list[Subscription]:
        """For the renewal timer: every subscription that expires before ``moment``."""
        rows = self._table.query_entities("ExpiresAt le @at", parameters={"at": moment})
        return [_subscription(e) for e in rows]
