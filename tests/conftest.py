"""Shared fixtures: the real storage emulator (Azurite) and the Graph + identity emulator, started by the tests.

Azurite runs once per session (about 2 s to start); each test gets fresh queue/table/container names where it
needs isolation. The Graph emulator is cheap (a certificate and a thread) and runs once per test that asks.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devtools.azurite import Azurite
from sync_core.adapters.storage import StorageClients, ensure_storage
from sync_core.settings import Settings


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """The process's meter provider, reading the app's metrics into memory (tests/metrics.py reads them)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with Azurite(log_path=log) as az:
        yield az


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[object]:
    """A started Graph + identity emulator with an empty world (add mailboxes with ``emulator.world``)."""
    from devtools.emulator import EmulatorServer

    with EmulatorServer(workdir=tmp_path / "emulator") as emu:
        yield emu


def make_settings(connection_string: str, **overrides: str) -> Settings:
    """Settings as a developer's local run has them, pointing at the given Azurite."""
    values = {
        "AzureWebJobsStorage": connection_string,
        "GRAPH_CLIENT_ID": "enrollio-sync-tests",
        "GRAPH_CLIENT_SECRET": "test-client-secret",
        "PUBLIC_BASE_URL": "http://127.0.0.1:7071",
        "ENROLLIO_SHARED_SECRET": "test-shared-secret",
        "TOKEN_ENCRYPTION_KEYS": "k1:" + base64.b64encode(b"k" * 32).decode(),
        "ENROLLIO_RETURN_URLS": "https://app.enrollio.example/",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def storage(azurite: Azurite) -> StorageClients:
    """Clients for the session's Azurite, with every queue, table and container created."""
    clients = StorageClients(make_settings(azurite.connection_string))
    ensure_storage(clients)
    return clients
