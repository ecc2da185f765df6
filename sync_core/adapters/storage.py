"""Azure Storage clients built from settings: a connection string locally, managed identity in Azure."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from sync_core.settings import StorageSettings

# The Azure SDK logs every request and response at INFO (a short local run wrote about 100,000 such lines);
# failures still surface as exceptions, and warnings still log.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


SINGLE_PUT_BYTES = 4 * 1024 * 1024  # up to this, one Put Blob (every synced attachment: the cap is 3 MiB)
BLOCK_BYTES = 1024 * 1024  # beyond it, Put Block by Put Block (the SDK holds about two blocks at a time)


@dataclass(frozen=True)
class Endpoints:
    blob: str
    queue: str
    table: str


def identity_endpoints(settings: StorageSettings) -> Endpoints:
    """Service URIs for an identity-based connection (``__accountName`` or explicit ``__*ServiceUri``)."""
    name = settings.storage_account_name
    return Endpoints(
        blob=settings.storage_blob_service_uri or f"https://{name}.blob.core.windows.net",
        queue=settings.storage_queue_service_uri or f"https://{name}.queue.core.windows.net",
        table=settings.storage_table_service_uri or f"https://{name}.table.core.windows.net",
    )


class StorageClients:
    """Lazily built service clients, shared by every invocation in the process."""

    def __init__(self, settings: StorageSettings) -> None:
        self._settings = settings

    @cached_property
    def _credential(self) -> Any:
        # Imported here: only the identity path needs azure-identity at run time.
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        client_id = self._settings.storage_client_id
        return ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()

    @property
    def _connection_string(self) -> str | None:
        secret = self._settings.storage_connection_string
        return secret.get_secret_value() if secret else None

    @cached_property
    def blobs(self) -> BlobServiceClient:
        # Blobs over 4 MiB go up in 1 MiB blocks (the SDK's default single put is 64 MiB, read whole into memory):
        # a large sent attachment is streamed from its base64 text instead of held twice.
        if cs := self._connection_string:
            return BlobServiceClient.from_connection_string(
                cs, max_single_put_size=SINGLE_PUT_BYTES, max_block_size=BLOCK_BYTES
            )
        return BlobServiceClient(
            identity_endpoints(self._settings).blob,
            credential=self._credential,
            max_single_put_size=SINGLE_PUT_BYTES,
            max_block_size=BLOCK_BYTES,
        )

    @cached_property
    def tables(self) -> TableServiceClient:
        if cs := self._connection_string:
            return TableServiceClient.from_connection_string(cs)
        return TableServiceClient(identity_endpoints(self._settings).table, credential=self._credential)

    @cached_property
    def queues(self) -> QueueServiceClient:
        if cs := self._connection_string:
            return QueueServiceClient.from_connection_string(cs)
        return QueueServiceClient(identity_endpoints(self._settings).queue, credential=self._credential)

    def queue(self, name: str) -> QueueClient:
        """A queue client that writes base64 text, the encoding the Functions queue trigger expects."""
        return self.queues.get_queue_client(
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )


def utc(value: Any) -> dt.datetime:
    """A table's datetime (or ISO text) as timezone-aware UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def ensure_storage(clients: StorageClients) -> None:
    """Create every queue, table and container the service uses (idempotent).

    In Azure, Bicep declares them all; locally (Azurite starts empty) the local host and the tests call this.
    """
    from azure.core.exceptions import ResourceExistsError

    from sync_core import names

    for queue in (*names.QUEUES, *names.POISON_QUEUES):
        with contextlib.suppress(ResourceExistsError):
            clients.queues.create_queue(queue)
    for table in names.TABLES:
        clients.tables.create_table_if_not_exists(table)
    for container in names.CONTAINERS:
        with contextlib.suppress(ResourceExistsError):
            clients.blobs.create_container(container)
