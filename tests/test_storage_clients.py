"""StorageClients from the one settings model: identity-based in Azure (the AzureWebJobsStorage__* settings infra/
declares), a connection string locally (against real Azurite).

The identity path is checked the way Azure Functions runs it: the platform's managed identity endpoint
(IDENTITY_ENDPOINT / IDENTITY_HEADER, as App Service sets them) is a local fake that records the token requests.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.queue import QueueClient
from pydantic import ValidationError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from devtools.azurite import Azurite
from sync_core.adapters.storage import StorageClients
from sync_core.settings import Settings

APP_SETTINGS = {
    "GRAPH_CLIENT_ID": "00000000-0000-0000-0000-00000000c11d",
    "GRAPH_CLIENT_SECRET": "graph-secret",
    "PUBLIC_BASE_URL": "https://enrollio-sync.example",
    "ENROLLIO_SHARED_SECRET": "shared-secret",
    "TOKEN_ENCRYPTION_KEYS": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
}
IDENTITY_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
STORAGE_SCOPE = "https://storage.azure.com/.default"


def settings_from(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    """Settings read from the environment, as the app reads them, holding exactly ``values`` plus the app's."""
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    for name, value in {**APP_SETTINGS, **values}.items():
        monkeypatch.setenv(name, value)
    return Settings()


class _Quiet(WSGIRequestHandler):
    def log(self, *args: Any) -> None:
        pass


@pytest.fixture
def identity_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """A fake App Service managed identity endpoint; yields the query of every token request it answers."""
    requests: list[dict[str, str]] = []

    @Request.application
    def issue(request: Request) -> Response:
        assert request.headers.get("X-IDENTITY-HEADER") == "identity-header"
        requests.append(dict(request.args))
        token = {"access_token": "t", "expires_on": str(int(time.time()) + 3600), "token_type": "Bearer"}
        return Response(json.dumps({**token, "resource": request.args["resource"]}), mimetype="application/json")

    server = make_server("127.0.0.1", 0, issue, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header")
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)  # the default chain would pick it up
    try:
        yield requests
    finally:
        server.shutdown()
        thread.join()


def test_account_name_gives_the_public_endpoints_and_the_configured_identity(
    monkeypatch: pytest.MonkeyPatch, identity_endpoint: list[dict[str, str]]
) -> None:
    clients = StorageClients(
        settings_from(
            monkeypatch,
            {"AzureWebJobsStorage__accountName": "stsync", "AzureWebJobsStorage__clientId": IDENTITY_CLIENT_ID},
        )
    )

    assert clients.blobs.url == "https://stsync.blob.core.windows.net/"
    assert clients.queues.url == "https://stsync.queue.core.windows.net/"
    assert clients.tables.url == "https://stsync.table.core.windows.net"
    assert clients.queue("inbound-messages").url == "https://stsync.queue.core.windows.net/inbound-messages"
    assert clients.queues.credential is clients.blobs.credential is clients.tables.credential  # one token cache
    credential = clients.blobs.credential
    assert isinstance(credential, ManagedIdentityCredential)

    credential.get_token(STORAGE_SCOPE)

    assert identity_endpoint == [
        {"api-version": "2019-08-01", "resource": "https://storage.azure.com", "client_id": IDENTITY_CLIENT_ID}
    ]


def test_service_uris_override_the_account_name(monkeypatch: pytest.MonkeyPatch) -> None:
    clients = StorageClients(
        settings_from(
            monkeypatch,
            {
                "AzureWebJobsStorage__blobServiceUri": "https://stsync.blob.core.chinacloudapi.cn",
                "AzureWebJobsStorage__queueServiceUri": "https://stsync.queue.core.chinacloudapi.cn",
                "AzureWebJobsStorage__tableServiceUri": "https://stsync.table.core.chinacloudapi.cn",
                "AzureWebJobsStorage__clientId": IDENTITY_CLIENT_ID,
            },
        )
    )

    assert clients.blobs.url == "https://stsync.blob.core.chinacloudapi.cn/"
    assert clients.queues.url == "https://stsync.queue.core.chinacloudapi.cn/"
    assert clients.tables.url == "https://stsync.table.core.chinacloudapi.cn"


def test_without_a_client_id_the_default_chain_uses_the_platform_identity(
    monkeypatch: pytest.MonkeyPatch, identity_endpoint: list[dict[str, str]]
) -> None:
    clients = StorageClients(settings_from(monkeypatch, {"AzureWebJobsStorage__accountName": "stsync"}))

    credential = clients.tables.credential
    assert isinstance(credential, DefaultAzureCredential)
    credential.get_token(STORAGE_SCOPE)

    assert identity_endpoint == [{"api-version": "2019-08-01", "resource": "https://storage.azure.com"}]


def test_no_storage_setting_is_an_error_naming_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as error:
        settings_from(monkeypatch, {})

    assert "AzureWebJobsStorage__accountName" in str(error.value)
    assert "set AzureWebJobsStorage (connection string)" in str(error.value)


def test_a_connection_string_reaches_azurite_with_base64_queue_messages(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    clients = StorageClients(settings_from(monkeypatch, {"AzureWebJobsStorage": azurite.connection_string}))
    suffix = uuid.uuid4().hex[:8]

    queue = clients.queue(f"inbound-{suffix}")
    queue.create_queue()
    queue.send_message('{"message": "AAMk"}')
    raw = QueueClient.from_connection_string(azurite.connection_string, f"inbound-{suffix}").peek_messages()[0]
    container = clients.blobs.create_container(f"bodies-{suffix}")
    container.upload_blob("m1.html", b"<p>hello</p>")
    table = clients.tables.create_table(f"Threads{suffix}")
    table.upsert_entity({"PartitionKey": "conn-1", "RowKey": "thread-1", "subject": "Hello"})

    received = queue.receive_message()
    assert raw.content == "eyJtZXNzYWdlIjogIkFBTWsifQ=="  # what the Functions queue trigger decodes
    assert received is not None and received.content == '{"message": "AAMk"}'
    assert container.download_blob("m1.html").readall() == b"<p>hello</p>"
    assert table.get_entity("conn-1", "thread-1")["subject"] == "Hello"
