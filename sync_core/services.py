"""The ports every use case needs, built once per process from settings (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import requests

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, MailboxStore, SubscriptionStore
from sync_core.adapters.graph import GraphClient, RetryPolicy, TokenSource
from sync_core.adapters.identity import ConnectionTokens, Identity, http_session
from sync_core.adapters.mailbox_gate import BlobSlots, MailboxGate
from sync_core.adapters.secrets_store import FlowStore, TokenCacheStore
from sync_core.adapters.spent_signatures import SpentSignatures
from sync_core.adapters.storage import StorageClients
from sync_core.adapters.upload import UploadClient
from sync_core.clock import Clock, SystemClock
from sync_core.connections import Connection
from sync_core.keyring import Keyring
from sync_core.settings import Settings


@dataclass
class Services:
    settings: Settings
    clock: Clock

    @cached_property
    def storage(self) -> StorageClients:
        return StorageClients(self.settings)

    @cached_property
    def keyring(self) -> Keyring:
        return Keyring.from_setting(self.settings.token_encryption_keys.get_secret_value())

    @cached_property
    def http(self) -> requests.Session:
        return http_session(self.settings.graph_ca_bundle)

    @cached_property
    def upload_http(self) -> requests.Session:
        """Its own session for upload-session URLs: nothing of Graph's requests (tokens) is shared with them."""
        return http_session(self.settings.graph_ca_bundle)

    @cached_property
    def identity(self) -> Identity:
        return Identity(self.settings, self.http)

    @cached_property
    def connections(self) -> ConnectionStore:
        return ConnectionStore(self.storage.tables)

    @cached_property
    def subscriptions(self) -> SubscriptionStore:
        return SubscriptionStore(self.storage.tables)

    @cached_property
    def mailboxes(self) -> MailboxStore:
        return MailboxStore(self.storage.tables)

    @cached_property
    def flows(self) -> FlowStore:
        return FlowStore(self.storage.tables, self.keyring)

    @cached_property
    def token_caches(self) -> TokenCacheStore:
        return TokenCacheStore(self.storage.blobs, self.keyring)

    @cached_property
    def spent_signatures(self) -> SpentSignatures:
        return SpentSignatures(self.storage.tables)

    @cached_property
    def mailbox_gate(self) -> MailboxGate:
        """Graph's per-mailbox limits across every instance (slots and throttles in Blob storage)."""
        return MailboxGate(BlobSlots(self.storage.blobs.get_container_client(names.CONTAINER_MAILBOX_GATES)))

    @property
    def shared_secret(self) -> bytes:
        return self.settings.enrollio_shared_secret.get_secret_value().encode()

    def graph(self, token: TokenSource, mailbox: str, retry: RetryPolicy | None = None) -> GraphClient:
        retry = retry or RetryPolicy(budget_seconds=self.settings.graph_retry_budget_seconds)
        return GraphClient(
            self.settings.graph_base_url, token, mailbox=mailbox, session=self.http, retry=retry, gate=self.mailbox_gate
        )

    def tokens_for(self, connection: Connection) -> ConnectionTokens:
        """The connection's access tokens, from its encrypted cache."""
        return ConnectionTokens(self.identity, self.token_caches, connection.connection_id, connection.home_account_id)

    def graph_for(self, connection: Connection, retry: RetryPolicy | None = None) -> GraphClient:
        """A Graph client acting as the connection's mailbox, with tokens from its encrypted cache."""
        return self.graph(self.tokens_for(connection), connection.user_object_id, retry)

    def uploads_for(self, connection: Connection) -> UploadClient:
        """PUTs to the connection's upload sessions (pre-authenticated URLs: no token), within the retry budget."""
        retry = RetryPolicy(budget_seconds=self.settings.graph_retry_budget_seconds)
        return UploadClient(self.upload_http, mailbox=connection.user_object_id, retry=retry, gate=self.mailbox_gate)


def default_services() -> Services:
    from sync_core.settings import get_settings

    return Services(get_settings(), SystemClock())
