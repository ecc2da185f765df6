"""Short-lived OAuth flows (table) and MSAL token caches (blobs), both sealed with the keyring.

An auth-code flow holds the PKCE verifier and nonce: it is sealed too, bound to its ``state``. It can be spent
exactly once: a conditional update (If-Match on the etag read) marks it used, so two callbacks racing with the
same ``state`` cannot both proceed. Finding it spends nothing, so the caller can check the browser first.
Token caches are bound to their connection id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient

from sync_core import names
from sync_core.keyring import Keyring


@dataclass(frozen=True)
class PendingConnect:
    """A connect attempt between the redirect to Microsoft and the callback."""

    state: str
    user_id: str
    account_id: str
    return_url: str
    flow: dict[str, Any]  # MSAL's auth-code flow (PKCE verifier, nonce, redirect URI)
    expires_at: dt.datetime
    browser_binding: str = ""  # sha256 of the nonce in the cookie of the browser that started the flow
    etag: str = ""  # the row as found: spending it is conditional on it


class FlowStore:
    def __init__(self, tables: TableServiceClient, keyring: Keyring) -> None:
        self._table = tables.get_table_client(names.TABLE_OAUTH_FLOWS)
        self._keyring = keyring

    def put(self, pending: PendingConnect) -> None:
        sealed = self._keyring.seal(json.dumps(pending.flow).encode(), pending.state.encode())
        self._table.create_entity(
            {
                "PartitionKey": pending.state,
                "RowKey": "",
                "UserId": pending.user_id,
                "AccountId": pending.account_id,
                "ReturnUrl": pending.return_url,
                "Flow": sealed,
                "ExpiresAt": pending.expires_at,
                "BrowserBinding": pending.browser_binding,
                "Used": False,
            }
        )

    def find(self, state: str, now: dt.datetime) -> PendingConnect | None:
        """The pending connect for ``state``, not yet spent; None when unknown, expired or already spent."""
        try:
            entity = self._table.get_entity(state, "")
        except ResourceNotFoundError:
            return None
        expires_at = entity["ExpiresAt"]
        if entity.get("Used") or expires_at <= now:
            return None
        flow = json.loads(self._keyring.open(bytes(entity["Flow"]), state.encode()))
        return PendingConnect(
            state,
            entity["UserId"],
            entity["AccountId"],
            entity["ReturnUrl"],
            flow,
            expires_at,
            entity.get("BrowserBinding", ""),
            str(entity.metadata["etag"]),
        )

    def spend(self, pending: PendingConnect) -> bool:
        """Mark the flow used, once: False when another callback spent it since it was found."""
        try:
            self._table.update_entity(
                {"PartitionKey": pending.state, "RowKey": "", "Used": True},
                mode=UpdateMode.MERGE,
                etag=pending.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def take(self, state: str, now: dt.datetime) -> PendingConnect | None:
        """The pending connect for ``state``, once; None when unknown, expired or already taken."""
        pending = self.find(state, now)
        return pending if pending is not None and self.spend(pending) else None


class TokenCacheStore:
    """One encrypted MSAL cache per connection, in the ``token-caches`` container."""

    def __init__(self, blobs: BlobServiceClient, keyring: Keyring) -> None:
        self._container = blobs.get_container_client(names.CONTAINER_TOKEN_CACHES)
        self._keyring = keyring

    def load(self, connection_id: str) -> str | None:
        try:
            sealed = self._container.download_blob(connection_id).readall()
        except ResourceNotFoundError:
            return None
        return self._keyring.open(sealed, connection_id.encode()).decode()

    def save(self, connection_id: str, serialized: str) -> None:
        sealed = self._keyring.seal(serialized.encode(), connection_id.encode())
        self._container.upload_blob(connection_id, sealed, overwrite=True)

    def delete(self, connection_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(connection_id)

    def raw(self, connection_id: str) -> bytes | None:
        """The stored bytes as they are at rest (for operators' checks and tests)."""
        try:
            return self._container.download_blob(connection_id).readall()
        except ResourceNotFoundError:
            return None
