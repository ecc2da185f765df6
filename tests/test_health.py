"""GET /api/health: the pure decision, the real probes, and the route through the local host.

End to end with Azurite and the Graph + identity emulator up: 200 and every check ok; a dead dependency: 503
naming it; incomplete settings: 503 naming the setting.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydantic import ValidationError

import function_app
from devtools.azurite import Azurite, AzuritePorts, connection_string
from devtools.local_host import LocalHost
from devtools.ports import free_port
from sync_core.adapters.storage import StorageClients
from sync_core.health import Check, decide, describe_settings_error, probes_for, run_checks
from sync_core.settings import Settings, get_settings
from tests.conftest import make_settings

CHECKS = {"blob", "queue", "table", "identity", "graph"}


# -- the decision (pure) ----------------------------------------------------------------------------------


def test_healthy_only_when_every_check_passed() -> None:
    ok = decide({"blob": Check(True, "reachable"), "graph": Check(True, "HTTP 401 from x")})
    assert (ok.healthy, ok.http_status, ok.to_json()["status"]) == (True, 200, "ok")

    down = decide({"blob": Check(True, "reachable"), "graph": Check(False, "ConnectionError: refused")})
    assert (down.healthy, down.http_status) == (False, 503)
    assert down.to_json() == {
        "status": "unavailable",
        "checks": {
            "blob": {"ok": True, "detail": "reachable"},
            "graph": {"ok": False, "detail": "ConnectionError: refused"},
        },
    }


def test_no_checks_is_not_healthy() -> None:
    assert decide({}).http_status == 503


def test_a_probe_that_raises_is_a_failed_check_with_its_reason() -> None:
    def refused() -> str:
        raise ConnectionError("connection refused\nmore lines")

    report = run_checks({"up": lambda: "fine", "down": refused})
    assert report.checks == {"up": Check(True, "fine"), "down": Check(False, "ConnectionError: connection refused")}


def test_a_settings_error_names_each_setting_without_echoing_values() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(  # type: ignore[call-arg]
            AzureWebJobsStorage="UseDevelopmentStorage=true",
            GRAPH_CLIENT_SECRET="x",
            PUBLIC_BASE_URL="http://127.0.0.1:7071",
            ENROLLIO_SHARED_SECRET="x",
            TOKEN_ENCRYPTION_KEYS="x",
            ATTACHMENT_CAP_BYTES="super-secret-looking-value",
        )
    detail = describe_settings_error(caught.value)
    assert "GRAPH_CLIENT_ID: Field required" in detail
    assert "ATTACHMENT_CAP_BYTES: " in detail
    assert "super-secret-looking-value" not in detail


# -- the real probes against real endpoints --------------------------------------------------------------


def test_discovery_must_be_a_discovery_document_but_any_graph_answer_is_reachable(azurite: Azurite) -> None:
    # Azurite answers every URL with an HTTP error: enough to prove Graph's host answers, not enough for MSAL.
    azurite_blob = f"http://127.0.0.1:{azurite.ports.blob}/devstoreaccount1"
    settings = make_settings(azurite.connection_string, GRAPH_AUTHORITY=azurite_blob, GRAPH_BASE_URL=azurite_blob)

    checks = run_checks(probes_for(settings, StorageClients(settings), requests.Session())).checks

    assert checks["graph"].ok and checks["graph"].detail.startswith("HTTP 4")
    assert not checks["identity"].ok
    assert checks["identity"].detail.startswith("LookupError: HTTP 4")
    assert "/v2.0/.well-known/openid-configuration" in checks["identity"].detail
    assert all(checks[name].ok for name in ("blob", "queue", "table"))


# -- the route, through the local host ------------------------------------------------------------------


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set the app's settings in the environment; function_app builds its ports anew from them."""

    def apply(**values: str | None) -> None:
        for key, value in values.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        function_app.services.cache_clear()

    yield apply
    get_settings.cache_clear()
    function_app.services.cache_clear()


@pytest.fixture
def healthy_env(azurite: Azurite, emulator: Any, app_env: Callable[..., None]) -> Callable[..., None]:
    app_env(
        AzureWebJobsStorage=azurite.connection_string,
        GRAPH_CLIENT_ID="enrollio-health-tests",
        GRAPH_CLIENT_SECRET="test-client-secret",
        GRAPH_AUTHORITY=emulator.authority,
        GRAPH_BASE_URL=emulator.graph_base_url,
        GRAPH_CA_BUNDLE=str(emulator.ca_path),
        PUBLIC_BASE_URL="http://127.0.0.1:7071",
        ENROLLIO_SHARED_SECRET="test-shared-secret",
        TOKEN_ENCRYPTION_KEYS="k1:" + base64.b64encode(b"k" * 32).decode(),
    )
    return app_env


@pytest.fixture
def host(healthy_env: Callable[..., None]) -> Iterator[LocalHost]:
    with LocalHost(local_settings=None, port=0) as running:
        yield running


def get_health(host: LocalHost) -> tuple[int, dict[str, Any], requests.Response]:
    response = requests.get(f"{host.url}/api/health", timeout=30)
    return response.status_code, response.json(), response


def test_all_dependencies_up_is_200_with_every_check_ok(host: LocalHost, emulator: Any) -> None:
    status, body, response = get_health(host)

    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    assert all(check["ok"] for check in body["checks"].values())
    # Graph without a token answers 401: reachable.
    assert body["checks"]["graph"]["detail"] == f"HTTP 401 from {emulator.graph_base_url}"
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"


def test_storage_on_a_dead_port_is_503_naming_each_storage_service(
    host: LocalHost, healthy_env: Callable[..., None]
) -> None:
    dead = free_port()
    healthy_env(AzureWebJobsStorage=connection_string(AzuritePorts(dead, dead, dead)))

    status, body, _ = get_health(host)

    assert status == 503
    assert body["status"] == "unavailable"
    failing = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failing == {"blob", "queue", "table"}
    for name in failing:
        assert "Connection refused" in body["checks"][name]["detail"]
        assert f"port={dead}" in body["checks"][name]["detail"]


def test_identity_and_graph_unreachable_is_503_naming_them(host: LocalHost, healthy_env: Callable[..., None]) -> None:
    dead = free_port()
    healthy_env(GRAPH_AUTHORITY=f"https://127.0.0.1:{dead}/tenant", GRAPH_BASE_URL=f"https://127.0.0.1:{dead}/v1.0")

    status, body, _ = get_health(host)

    assert status == 503
    assert {name for name, check in body["checks"].items() if not check["ok"]} == {"identity", "graph"}


def test_a_missing_setting_is_503_naming_it(host: LocalHost, healthy_env: Callable[..., None]) -> None:
    healthy_env(GRAPH_CLIENT_ID=None)

    status, body, _ = get_health(host)

    assert status == 503
    assert body == {
        "status": "unavailable",
        "checks": {"settings": {"ok": False, "detail": "GRAPH_CLIENT_ID: Field required"}},
    }


def test_a_wrong_events_secret_turns_events_off_and_health_names_it_while_mail_sync_works(
    host: LocalHost, healthy_env: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    # The Key Vault reference did not resolve, or the secret is still Bicep's placeholder 'unset'.
    healthy_env(ENROLLIO_EVENTS_URL="https://enrollio.example/hooks", ENROLLIO_EVENTS_SECRET="unset")

    status, body, _ = get_health(host)

    assert status == 503
    assert {name for name, check in body["checks"].items() if not check["ok"]} == {"events"}  # settings load
    assert body["checks"]["events"]["detail"] == (
        "ValueError: events to Enrollio are off (kept in the outbox until fixed): "
        "ENROLLIO_EVENTS_SECRET must start with 'whsec_'"
    )
    assert function_app.services().settings.graph_client_id == "enrollio-health-tests"  # every function runs
    assert any("events to Enrollio are off" in r.getMessage() for r in caplog.records)
