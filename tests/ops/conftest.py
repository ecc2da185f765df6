"""The operator's CLI against its own Azurite: the status it prints is exactly what these tests wrote."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite
from sync_core.adapters.storage import StorageClients, ensure_storage
from sync_core.settings import StorageSettings


@pytest.fixture(scope="module")
def ops_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(log_path=tmp_path_factory.mktemp("ops-azurite") / "azurite.log") as azurite:
        yield azurite


@pytest.fixture
def own_storage(ops_azurite: Azurite) -> Iterator[tuple[dict[str, str], StorageClients]]:
    """An Azurite holding nothing but every queue, table and container, empty: (the CLI's environment, clients).

    One Azurite per module, emptied before each test (a fresh one per test cost seconds each)."""
    environ = {"AzureWebJobsStorage": ops_azurite.connection_string}
    clients = StorageClients(StorageSettings.model_validate(environ))
    for queue in clients.queues.list_queues():
        clients.queues.delete_queue(queue.name)
    for table in clients.tables.list_tables():
        clients.tables.delete_table(table.name)
    for container in clients.blobs.list_containers():
        clients.blobs.delete_container(container.name)
    ensure_storage(clients)
    yield environ, clients
