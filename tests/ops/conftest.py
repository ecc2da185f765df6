"""The operator's CLI against its own Azurite: the status it prints is exactly what these tests wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from sync_core.adapters.storage import StorageClients, ensure_storage
from sync_core.settings import StorageSettings


@pytest.fixture
def own_storage(tmp_path: Path) -> Iterator[tuple[dict[str, str], StorageClients]]:
    """A fresh Azurite with every queue, table and container: (the CLI's environment, clients on it)."""
    with Azurite(log_path=tmp_path / "azurite.log") as azurite:
        environ = {"AzureWebJobsStorage": azurite.connection_string}
        clients = StorageClients(StorageSettings.model_validate(environ))
        ensure_storage(clients)
        yield environ, clients
