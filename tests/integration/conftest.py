"""The whole offline stack for end-to-end tests: Azurite, the Graph + identity emulator and the local host
running the real ``function_app``, wired as ``make run`` wires them; plus Enrollio's side (signed calls) and a
browser (following redirects through the connect flow).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from devtools.azurite import Azurite
from devtools.emulator import EmulatorServer, World
from devtools.local_host import LocalHost
from devtools.ports import free_port
from sync_core.adapters.storage import ensure_storage
from sync_core.clock import SystemClock
from sync_core.connect import CALLBACK_ROUTE
from sync_core.services import Services
from sync_core.settings import Settings, get_settings
from sync_core.signing import sign_link, sign_request
from tests.conftest import https_session, make_settings

RETURN_URL = "https://app.enrollio.example/settings/email"
CLIENT_ID = "enrollio-sync-tests"


def wait_until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Enrollio:
    """Enrollio's backend: HMAC-signed calls to the function app."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self.base_url = base_url
        self.secret = secret
        self.http = requests.Session()
        self.http.trust_env = False

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        sign: bool = True,
    ) -> requests.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        target = path + (f"?{urlencode(params)}" if params else "")
        signed = sign_request(self.secret, int(time.time()), method, target, raw) if sign else {}
        return self.http.request(
            method,
            self.base_url + target,
            data=raw,
            headers={**signed, **(headers or {}), "Content-Type": "application/json"},
        )

    def connect_link(
        self,
        user_id: str,
        account_id: str = "acct-1",
        login_hint: str = "",
        ttl: int = 600,
        return_url: str = RETURN_URL,
    ) -> str:
        params = {
            "user_id": user_id,
            "account_id": account_id,
            "return_url": return_url,
            "exp": str(int(time.time()) + ttl),
        }
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.base_url}/api/outlook/connect?{urlencode(sign_link(self.secret, params))}"


@dataclass
class Stack:
    azurite: Azurite
    emulator: EmulatorServer
    host: LocalHost
    settings: Settings
    services: Services
    enrollio: Enrollio

    @property
    def world(self) -> World:
        return self.emulator.world

    def browser(self) -> requests.Session:
        """A browser: trusts the emulator's certificate, keeps no proxy settings."""
        return https_session(self.emulator.ca_path)

    def control(self) -> requests.Session:
        return https_session(self.emulator.ca_path)

    def new_mailbox(self, name: str) -> str:
        address = f"{name}.{uuid.uuid4().hex[:6]}@school.example"
        self.world.add_mailbox(address)
        return address

    def sign_in(self, link: str) -> requests.Response:
        """Follow the connect flow like a browser, up to the redirect back to Enrollio (not followed)."""
        browser = self.browser()
        response = browser.get(link, allow_redirects=False)
        for _ in range(5):
            location = response.headers.get("Location", "")
            if response.status_code != 302 or location.startswith(RETURN_URL):
                return response
            response = browser.get(location, allow_redirects=False)
        return response

    def connect(self, user_id: str, address: str, account_id: str = "acct-1") -> dict[str, str]:
        """Connect ``address`` for ``user_id``; the outcome Enrollio's return URL receives."""
        response = self.sign_in(self.enrollio.connect_link(user_id, account_id, login_hint=address))
        assert response.status_code == 302, response.text
        outcome = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
        assert outcome.get("outcome") == "connected", outcome
        return outcome

    def flush(self) -> None:
        """Wait until the emulator has delivered every pending notification."""
        self.emulator.subscriptions.flush(timeout=15)


@pytest.fixture(scope="session")
def stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import function_app

    saved = dict(os.environ)
    with EmulatorServer(World(), workdir=tmp_path_factory.mktemp("stack-emulator")) as emulator:
        # PUBLIC_BASE_URL must name the host's port before the app first reads its settings: pick it first.
        host_port = free_port()
        host = LocalHost(local_settings=None, port=host_port)
        base = f"http://127.0.0.1:{host_port}"
        settings = make_settings(
            azurite.connection_string,
            GRAPH_CLIENT_ID=CLIENT_ID,
            GRAPH_AUTHORITY=emulator.authority,
            GRAPH_BASE_URL=emulator.graph_base_url,
            GRAPH_CA_BUNDLE=str(emulator.ca_path),
            PUBLIC_BASE_URL=base,
            ENROLLIO_RETURN_URLS="https://app.enrollio.example/",
            GRAPH_RETRY_BUDGET_SECONDS="3",
        )
        os.environ.update(_as_environment(settings))
        get_settings.cache_clear()
        function_app.services.cache_clear()
        emulator.identity.register_app(
            CLIENT_ID, settings.graph_client_secret.get_secret_value(), [f"{base}/api/{CALLBACK_ROUTE}"]
        )
        services = Services(settings, SystemClock())
        ensure_storage(services.storage)
        with host:
            yield Stack(azurite, emulator, host, settings, services, Enrollio(base, services.shared_secret))
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    function_app.services.cache_clear()


def _as_environment(settings: Settings) -> dict[str, str]:
    out = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        out[field.alias or name] = str(value)
    return out


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def samples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "graph" / "samples"
