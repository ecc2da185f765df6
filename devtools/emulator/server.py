"""The emulator's HTTPS server: composition, dispatch, request log; in-process or standalone.

Dispatch, by path:
- ``/_emulator/...``: control endpoints (each component's ``control(request)``);
- ``/v1.0/...``: Graph. The bearer token is resolved to a ``Principal`` by the identity component (401
  otherwise), throttling and faults may answer first, then each Graph component's ``graph(request, principal)``;
- ``/api/v2.0/...``: the pre-authenticated upload URLs of attachment upload sessions (``mail_upload``), outside
  Graph's path as Exchange serves them; no bearer token, faults apply as the session's app and mailbox;
- anything else: the identity platform (``identity.dispatch(request)``), e.g. ``/{tenant}/oauth2/v2.0/token``.
A component answers ``None`` for paths it does not own. Handlers may set ``request.environ[web.ROUTE_KEY]``
to a route template (e.g. ``"GET /users/{id}/messages/{id}"``); the request log counts by it.
The components know the server only as a ``web.Host``, so none of them imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from devtools.emulator.faults import Faults
from devtools.emulator.identity import IdentityProvider
from devtools.emulator.mail import MailApi
from devtools.emulator.mail_upload import PATH_PREFIX as UPLOAD_PATH_PREFIX
from devtools.emulator.state import World
from devtools.emulator.subscriptions import SubscriptionsApi
from devtools.emulator.tls import TlsFiles, make_self_signed
from devtools.emulator.web import ROUTE_KEY, Component, GraphComponent, Principal, graph_error


@dataclass(frozen=True)
class LoggedRequest:
    at: float
    method: str
    path: str
    query: str
    route: str
    mailbox_id: str | None
    status: int
    prefer: str


class RequestLog:
    """Every request the emulator answered, for tests and benchmarks to count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.entries.append(entry)

    def snapshot(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self.entries)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{mailbox_id or "-": {route: count}}``."""
        out: dict[str, Counter[str]] = {}
        for e in self.snapshot():
            out.setdefault(e.mailbox_id or "-", Counter())[e.route] += 1
        return {k: dict(v) for k, v in out.items()}

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()


class EmulatorServer:
    """The whole emulator on one HTTPS port. ``with EmulatorServer() as emu: ...``"""

    def __init__(
        self, world: World | None = None, *, host: str = "127.0.0.1", port: int = 0, workdir: Path | None = None
    ) -> None:
        self.world = world or World()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graph-emulator-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.tls: TlsFiles = make_self_signed(self.workdir)
        self.log = RequestLog()
        self._server: BaseWSGIServer = make_server(
            host, port, self.wsgi, threaded=True, ssl_context=(str(self.tls.cert_path), str(self.tls.key_path))
        )
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None
        # Components get the server: the world, the base URL, each other (e.g. mail -> faults).
        self.faults = Faults(self)
        self.identity = IdentityProvider(self)
        self.mail = MailApi(self)
        self.subscriptions = SubscriptionsApi(self)
        self.graph_components: list[GraphComponent] = [self.mail, self.subscriptions]
        self.components: list[Component] = [self.faults, self.identity, self.mail, self.subscriptions]

    # -- addresses handed to clients ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """The MSAL authority (``https://host:port/<tenant>``); OIDC discovery hangs below it."""
        return f"{self.base_url}/{self.world.tenant_id}"

    @property
    def graph_base_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def ca_path(self) -> Path:
        return self.tls.cert_path

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), name="graph-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for component in self.components:
            closer = getattr(component, "close", None)
            if closer:
                closer()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- dispatch -------------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        principal: Principal | None = None
        try:
            response, principal = self._dispatch(request)
        except Exception as exc:  # an emulator bug must show as a 500 with the reason, not hang a client
            response = graph_error(500, "emulatorError", f"{type(exc).__name__}: {exc}")
        self.log.add(
            LoggedRequest(
                at=time.time(),
                method=request.method,
                path=request.path,
                query=request.query_string.decode(),
                route=environ.get(ROUTE_KEY) or f"{request.method} {request.path}",
                mailbox_id=principal.mailbox_id if principal else None,
                status=response.status_code,
                prefer=request.headers.get("Prefer", ""),
            )
        )
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[Response, Principal | None]:
        path = request.path
        if path.startswith("/_emulator/"):
            for component in self.components:
                if (resp := component.control(request)) is not None:
                    return resp, None
            return graph_error(404, "notFound", f"no control endpoint {request.method} {path}"), None
        if path.startswith("/v1.0/") or path == "/v1.0":
            principal = self.identity.authenticate(request)
            if principal is None:
                return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid."), None
            with self.faults.admit(request, principal) as refusal:
                if refusal is not None:
                    return refusal, principal
                for graph in self.graph_components:
                    if (resp := graph.graph(request, principal)) is not None:
                        return resp, principal
            return graph_error(
                400, "BadRequest", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'."
            ), principal
        if path.startswith(UPLOAD_PATH_PREFIX):
            owner = self.mail.uploads.principal_of(request)
            if owner is None:  # an unknown session: the handler says so
                return self.mail.uploads.handle(request), None
            with self.faults.admit(request, owner) as refusal:
                return (refusal if refusal is not None else self.mail.uploads.handle(request)), owner
        if (resp := self.identity.dispatch(request)) is not None:
            return resp, None
        return Response("not found", status=404), None


def main() -> None:
    """Run the emulator standalone: ``python -m devtools.emulator.server --mailbox teacher@school.example``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mailbox", action="append", default=[], help="address of a mailbox to create")
    parser.add_argument("--workdir", type=Path, default=None, help="where the certificate is written")
    args = parser.parse_args()
    world = World()
    for address in args.mailbox:
        world.add_mailbox(address)
    with EmulatorServer(world, port=args.port, workdir=args.workdir) as emu:
        print(
            json.dumps(
                {
                    "base_url": emu.base_url,
                    "authority": emu.authority,
                    "graph_base_url": emu.graph_base_url,
                    "ca_path": str(emu.ca_path),
                    "tenant_id": world.tenant_id,
                    "mailboxes": {m.address: m.id for m in world.mailboxes.values()},
                }
            ),
            flush=True,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
