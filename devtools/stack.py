"""The whole offline stack in one process: Azurite, the Graph + identity emulator, and the local Functions host
running ``function_app``, wired as in Azure; plus Enrollio's side of the conversation (signed calls, a browser
through the connect flow). Used by the integration tests, ``make demo`` and ``make bench``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from devtools.azurite import Azurite
from devtools.emulator import EmulatorServer, World
from devtools.emulator.notifier import trust_subscriber_ca
from devtools.emulator.tls import TlsFiles, make_self_signed
from devtools.local_host import LocalHost
from devtools.ports import free_port
from sync_core import names
from sync_core.adapters.storage import ensure_storage
from sync_core.clock import SystemClock
from sync_core.connect import CALLBACK_ROUTE
from sync_core.services import Services
from sync_core.settings import Settings, get_settings
from sync_core.signing import IDEMPOTENCY_HEADER, sign_link, sign_request
from sync_core.subscriptions import Subscription

RETURN_URL = "https://app.enrollio.example/settings/email"
T = TypeVar("T")
CLIENT_ID = "enrollio-sync-local"


def https_session(ca_path: Path) -> requests.Session:
    """A session that trusts only the emulator's certificate (REQUESTS_CA_BUNDLE would override ``verify=``)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_path)
    return session


def wait_for(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class Enrollio:
    """Enrollio's backend: HMAC-signed calls to the function app, and signed connect links.

    Each call is signed afresh (timestamp, a new nonce, the Idempotency-Key when given): a retry is a new
    signature, so the service's once-only rule for signatures never refuses it. The path and query are signed as
    sent, in their canonical form (README, "Signed requests")."""

    def __init__(self, base_url: str, secret: bytes, ca_path: Path | None = None) -> None:
        self.base_url = base_url
        self.secret = secret
        self.http = requests.Session()
        self.http.trust_env = False
        if ca_path:  # the local host's generated certificate, when it serves HTTPS
            self.http.verify = str(ca_path)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        sign: bool = True,
    ) -> requests.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        target = path + (f"?{urlencode(params)}" if params else "")
        given = dict(headers or {})
        key = next((given.pop(k) for k in list(given) if k.lower() == IDEMPOTENCY_HEADER.lower()), "")
        request = self.http.prepare_request(
            requests.Request(
                method, self.base_url + target, data=raw, headers={**given, "Content-Type": "application/json"}
            )
        )
        # Signed as sent (requests may escape the target further); the service reads it in its canonical form.
        signed = (
            sign_request(
                self.secret,
                int(time.time()),
                method,
                request.path_url,
                raw,
                nonce=secrets.token_urlsafe(16),
                idempotency_key=key,
            )
            if sign
            else ({IDEMPOTENCY_HEADER: key} if key else {})
        )
        request.headers.update(signed)
        request.headers.update(given)  # a test's own headers win (a forged signature, say)
        return self.http.send(request)

    def connect_link(
        self,
        user_id: str,
        account_id: str = "acct-1",
        login_hint: str = "",
        ttl: int = 600,
        return_url: str = RETURN_URL,
    ) -> str:
        params = {"user_id": user_id, "account_id": account_id, "return_url": return_url}
        params["exp"] = str(int(time.time()) + ttl)
        params["nonce"] = secrets.token_urlsafe(16)  # a link works once: two made alike must differ
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
    host_tls: TlsFiles | None = None  # the local host's certificate, when it serves HTTPS
    ca_bundle: Path | None = None  # what clients trust then: the emulator's and the local host's certificates

    @property
    def world(self) -> World:
        return self.emulator.world

    def browser(self) -> requests.Session:
        return https_session(self.ca_bundle or self.emulator.ca_path)

    def control(self) -> requests.Session:
        return https_session(self.ca_bundle or self.emulator.ca_path)

    def new_mailbox(self, name: str) -> str:
        address = f"{name}.{uuid.uuid4().hex[:6]}@school.example"
        self.world.add_mailbox(address)
        return address

    def consent(self, link: str, browser: requests.Session | None = None) -> tuple[str, dict[str, str]]:
        """Open Enrollio's connect link and sign in: the auto-submitting form Microsoft answers with
        (``form_post``), as its target and fields. ``browser`` keeps the cookies the callback checks."""
        browser = browser or self.browser()
        to_microsoft = browser.get(link, allow_redirects=False)
        if to_microsoft.status_code != 302:
            raise RuntimeError(f"the connect link answered {to_microsoft.status_code}: {to_microsoft.text[:300]}")
        page = browser.get(to_microsoft.headers["Location"], allow_redirects=False)
        return parse_auto_post_form(page.text)

    def sign_in(self, link: str) -> requests.Response:
        """The whole connect flow as a browser runs it, up to the redirect back to Enrollio (not followed)."""
        browser = self.browser()
        action, fields = self.consent(link, browser)
        return browser.post(action, data=fields, allow_redirects=False)

    def connect(self, user_id: str, address: str, account_id: str = "acct-1") -> dict[str, str]:
        """Connect ``address`` for ``user_id``: the outcome Enrollio's return URL receives."""
        response = self.sign_in(self.enrollio.connect_link(user_id, account_id, login_hint=address))
        if response.status_code != 302:
            raise RuntimeError(f"connect failed: {response.status_code} {response.text[:300]}")
        outcome = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
        if outcome.get("outcome") != "connected":
            raise RuntimeError(f"connect failed: {outcome}")
        return outcome

    def flush(self) -> None:
        """Wait until the emulator has delivered every pending notification."""
        self.emulator.subscriptions.flush(timeout=15)

    def settle(self, timeout: float = 30.0) -> None:
        """Every notification delivered and every queued message reference processed."""
        self.flush()
        queue = self.services.storage.queue(names.QUEUE_INBOUND)
        wait_for(lambda: queue.get_queue_properties().approximate_message_count == 0, "the inbound queue", timeout)

    def mail_world(self, method: str, path: str, body: Any = None) -> Any:
        """Call the emulator's control endpoints (``/_emulator/{path}``): the contact writes, the owner replies…"""
        response = self.control().request(method, f"{self.emulator.base_url}/_emulator/{path}", json=body)
        if not response.ok:
            raise RuntimeError(f"{method} /_emulator/{path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")


def parse_auto_post_form(page: str) -> tuple[str, dict[str, str]]:
    """The target and fields of a form_post page (what the browser's onload submit would send)."""
    parser = _FormParser()
    parser.feed(page)
    if not parser.action:
        raise RuntimeError(f"expected Microsoft's form_post page, got: {page[:300]}")
    return parser.action, parser.fields


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables the app reads them from (by their aliases)."""
    out = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        out[field.alias or name] = str(value)
    return out


def dev_settings(connection_string: str, emulator: EmulatorServer, base_url: str, **overrides: str) -> Settings:
    """Settings for a local run against the given Azurite and emulator (fresh secrets each time)."""
    import base64
    import secrets

    values = {
        "AzureWebJobsStorage": connection_string,
        "GRAPH_CLIENT_ID": CLIENT_ID,
        "GRAPH_CLIENT_SECRET": secrets.token_urlsafe(24),
        "GRAPH_AUTHORITY": emulator.authority,
        "GRAPH_BASE_URL": emulator.graph_base_url,
        "GRAPH_CA_BUNDLE": str(emulator.ca_path),
        "PUBLIC_BASE_URL": base_url,
        "ENROLLIO_SHARED_SECRET": secrets.token_urlsafe(32),
        "TOKEN_ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "ENROLLIO_RETURN_URLS": "https://app.enrollio.example/",
        # The catch-up timer's requests run at once: tests and the soak wait for the catch-up queue to drain, and
        # a spread request would stay hidden in it for up to a quarter hour.
        "CATCHUP_SPREAD_SECONDS": "0",
        **overrides,
    }
    # By alias from a str mapping: mypy matches every key against BaseSettings' own _-prefixed init options.
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def offline_stack(
    azurite: Azurite | None = None, workdir: Path | None = None, *, https: bool = False, **overrides: str
) -> Iterator[Stack]:
    """Start (or reuse an Azurite) and run everything; the process environment is restored afterwards.

    ``https``: the local host serves HTTPS at ``https://localhost:<port>`` with a certificate made now, as the app
    is served in Azure; the emulator (a site of its own, ``127.0.0.1``) trusts it for notifications, so the
    sign-in's ``form_post`` back to the app is a cross-site POST, as from Microsoft's sign-in page."""
    import function_app

    saved = dict(os.environ)
    with contextlib.ExitStack() as running:
        if azurite is None:
            azurite = running.enter_context(Azurite())
        if workdir is None:
            workdir = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="offline-stack-")))
        emulator = running.enter_context(EmulatorServer(World(), workdir=workdir / "emulator"))
        # PUBLIC_BASE_URL must name the host's port before the app first reads its settings: pick the port first.
        port = free_port()
        # Its own subject: a CA bundle finds a certificate's issuer by name, and the emulator's is "localhost".
        host_tls = (
            make_self_signed(workdir / "local-host", "Functions local host", stem="local-host") if https else None
        )
        base = f"https://localhost:{port}" if https else f"http://127.0.0.1:{port}"
        ca_bundle = None
        if host_tls:
            ca_bundle = workdir / "trusted-ca.pem"
            ca_bundle.write_bytes(emulator.ca_path.read_bytes() + host_tls.cert_path.read_bytes())
            trust_subscriber_ca(str(host_tls.cert_path))
            running.callback(trust_subscriber_ca, None)
        settings = dev_settings(azurite.connection_string, emulator, base, **overrides)
        os.environ.update(settings_environment(settings))
        get_settings.cache_clear()
        function_app.services.cache_clear()
        secret = settings.graph_client_secret.get_secret_value()
        emulator.identity.register_app(settings.graph_client_id, secret, [f"{base}/api/{CALLBACK_ROUTE}"])
        services = Services(settings, SystemClock())
        ensure_storage(services.storage)
        host = running.enter_context(
            LocalHost(local_settings=None, port=port, tls=host_tls, public_host="localhost" if https else None)
        )
        enrollio = Enrollio(base, services.shared_secret, ca_bundle)
        try:
            yield Stack(azurite, emulator, host, settings, services, enrollio, host_tls, ca_bundle)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
            function_app.services.cache_clear()


def notification_item(sub: Subscription, user_object_id: str, message_id: str) -> dict[str, Any]:
    """One ``created`` item shaped like tests/graph_samples/change-notification-message-created.json."""
    user = f"{user_object_id}@{sub.tenant_id}"
    return {
        "id": uuid.uuid4().hex[:13],
        "subscriptionId": sub.subscription_id,
        "subscriptionExpirationDateTime": sub.expires_at.isoformat().replace("+00:00", "Z"),
        "clientState": sub.client_state,
        "changeType": "created",
        "resource": f"users/{user}/messages/{message_id}",
        "tenantId": sub.tenant_id,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": f"Users/{user}/Messages/{message_id}",
            "@odata.etag": 'W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"',
            "id": message_id,
        },
    }
