"""Short-lived OAuth flows (table) and MSAL token caches (blobs), both sealed with the keyring.

An auth-code flow holds the PKCE verifier and nonce: it is sealed too, bound to its ``state``. It can be spent
exactly once: a conditional update (If-Match on the etag read) marks it used, so two callbacks racing with the
same ``state`` cannot both proceed. Finding it spends nothing, so the caller can check the browser first.
Token caches are bound to their connection id. A cache is refreshed under a lease on its blob (``refresh_lock``):
one refresh at a time per connection across instances, and a write that finds the blob leased waits its turn.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

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


# Blob storage's longest fixed lease: far longer than a refresh may take (MSAL's requests time out after
# ``identity.IDENTITY_TIMEOUT_SECONDS``), so a slow identity platform never outlives the lease and loses the rotated
# refresh token; it is renewed before the new cache is written all the same. A killed holder's lease ends by itself.
REFRESH_LEASE_SECONDS = 60
REFRESH_WAIT_SECONDS = 20.0  # a refresh takes a second or two; a waiter past this retries later (transient)


class RefreshBusy(Exception):
    """Another instance kept refreshing the connection's tokens for longer than ``REFRESH_WAIT_SECONDS``."""


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

    def save(self, connection_id: str, serialized: str, lease: BlobLeaseClient | None = None) -> None:
        """Write the cache; under ``lease`` when the caller holds the refresh lock, else after any refresh."""
        sealed = self._keyring.seal(serialized.encode(), connection_id.encode())
        if lease is not None:
            # Still ours (renewing a lapsed lease nobody took succeeds); if another instance took it, this raises
            # rather than overwrite the cache that instance is refreshing.
            lease.renew()
        try:
            self._container.upload_blob(connection_id, sealed, overwrite=True, lease=lease)
        except HttpResponseError as exc:
            if lease is not None or exc.status_code != 412:  # 412: leased, a refresh in progress elsewhere
                raise
            with self.refresh_lock(connection_id) as held:  # a sign-in's new cache is written after it
                self._container.upload_blob(connection_id, sealed, overwrite=True, lease=held)

    @contextlib.contextmanager
    def refresh_lock(self, connection_id: str, wait: float = REFRESH_WAIT_SECONDS) -> Iterator[BlobLeaseClient]:
        """Hold the lease on the connection's cache blob: one refresh at a time per connection, in every instance.

        ``ResourceNotFoundError`` when there is no cache; ``RefreshBusy`` when it stayed leased for ``wait`` s."""
        blob = self._container.get_blob_client(connection_id)
        deadline, pause = time.monotonic() + wait, 0.05
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=REFRESH_LEASE_SECONDS)
                break
            except ResourceNotFoundError:
                raise
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409 LeaseAlreadyPresent: another instance is refreshing
                    raise
            if time.monotonic() + pause > deadline:
                raise RefreshBusy(f"the token cache of {connection_id} stayed leased for {wait:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        try:
            yield lease
        finally:
            with contextlib.suppress(HttpResponseError):  # expired meanwhile: nothing to give back
                lease.release()

    def delete(self, connection_id: str) -> None:
        """Delete the cache, even while a refresh holds its lease (R8: a disconnect does not wait)."""
        try:
            self._container.delete_blob(connection_id)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code != 412:  # 412 LeaseIdMissing: leased by a refresh
                raise
            blob = self._container.get_blob_client(connection_id)
            with contextlib.suppress(HttpResponseError):
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(connection_id)

    def raw(self, connection_id: str) -> bytes | None:
        """The stored bytes as they are at rest (for operators' checks and tests)."""
        try:
            return self._container.download_blob(connection_id).readall()
        except ResourceNotFoundError:
            return None
