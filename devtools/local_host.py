"""The offline stand-in for ``func start``: runs a function app's HTTP, queue and timer functions locally.

What it does, as Core Tools does:
- reads ``local.settings.json`` ``Values`` into the environment (a variable already set wins) and
  ``Host.LocalHttpPort``; then imports the app (``module:attribute``, default ``function_app:app``) and indexes it
  with ``get_functions()``;
- serves HTTP triggers at ``http://127.0.0.1:<port>/<routePrefix>/<route>`` (host.json ``extensions.http``),
  honouring route parameters and methods (``local_host_http``); with ``tls`` (``--https``) over HTTPS, as Azure
  serves the app, so browsers apply ``Secure`` and ``SameSite=None`` cookies as they do there;
- polls Storage queues with host.json's ``extensions.queues`` semantics, poison queue included
  (``local_host_queues``); runs NCRONTAB timers and ``run_on_startup`` (``local_host_timers``);
- logs "Executing 'Functions.<name>' (Reason=..., Id=...)" / "Executed ... (Succeeded|Failed, ..., Duration=..ms)".
- logs each request line, with the credentials a query can carry (a connect link's ``sig``, an OAuth ``code``)
  redacted; in Azure, Application Insights records request URLs whole (README, "What is logged").

What it does not emulate: function keys (``AuthLevel.FUNCTION``/``ADMIN`` are not enforced, like ``func start``
locally), bindings other than the trigger (a function declaring one fails to load), identity-based trigger
connections, ``functionTimeout``, scale-out or more than one instance, lease renewal for long queue messages,
the timer schedule monitor, admin endpoints.

CLI: ``python -m devtools.local_host [--app function_app:app] [--port 7071] [--https] [--no-create-storage]
[--no-timers]``.
For the sync service's own app it first creates every queue, table and container the app uses
(``create_app_storage``), as ``make run`` does and the Bicep template does in Azure. With ``--https`` it serves
``https://localhost:<port>`` and sets ``PUBLIC_BASE_URL`` to that unless it is an ``https://`` URL already.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from devtools.emulator.tls import TlsFiles, make_self_signed
from devtools.local_host_config import (
    ConfigError,
    QueueOptions,
    apply_values,
    connection_string,
    read_host_json,
    read_local_settings,
)
from devtools.local_host_http import HttpDispatcher, HttpRoute, RedactingRequestHandler, http_route
from devtools.local_host_queues import QueueFunction, QueueListener
from devtools.local_host_timers import TimerFunction, TimerRunner, validate_ncrontab
from devtools.ports import free_port
from sync_core.adapters.storage import StorageClients, ensure_storage
from sync_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_APP = "function_app:app"
DEFAULT_PORT = 7071
DEFAULT_STORAGE_SETTING = "AzureWebJobsStorage"

log = logging.getLogger("devtools.local_host")


@functools.cache
def index_app(target: str = DEFAULT_APP) -> tuple[Any, ...]:
    """Import ``module:attribute`` and index its functions, once per process.

    ``FunctionApp.get_functions()`` raises on a second call (docs/offline-toolchain.md), so every caller in a
    process (the local host, tests) shares this index.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"app: {target!r} is not 'module:attribute'")
    app = getattr(importlib.import_module(module_name), attribute)
    return tuple(app.get_functions())


class LocalHost:
    """An in-process host: ``with LocalHost(...) as host: requests.get(host.url + "/api/health")``."""

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        host_json: Path = ROOT / "host.json",
        local_settings: Path | None = ROOT / "local.settings.json",
        port: int | None = None,
        bind: str = "127.0.0.1",
        tls: TlsFiles | None = None,
        public_host: str | None = None,
        run_timers: bool = True,
    ) -> None:
        self._app = app
        self._run_timers = run_timers
        self._host_json = host_json
        self._local_settings = local_settings
        self._port = port
        self._bind = bind
        self._tls = tls
        self._public_host = public_host or bind  # the name clients use (a certificate names it)
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self.routes: list[HttpRoute] = []
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerRunner] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local host is not started")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._public_host}:{self._server.server_port}"

    def start(self) -> LocalHost:
        """Load settings, index the app, validate every trigger, then start serving, polling and scheduling."""
        port = self._port
        if self._local_settings is not None and self._local_settings.exists():
            settings = read_local_settings(self._local_settings)
            apply_values(settings.values)
            port = settings.http_port if port is None else port
        options = read_host_json(self._host_json)
        self._build(index_app(self._app), options.queues)
        dispatcher = HttpDispatcher(self.routes, options.route_prefix)
        self._server = make_server(
            self._bind,
            DEFAULT_PORT if port is None else port,
            dispatcher,
            threaded=True,
            request_handler=RedactingRequestHandler,
            ssl_context=(str(self._tls.cert_path), str(self._tls.key_path)) if self._tls else None,
        )
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, name=f"local-host-http-{self._server.server_port}", daemon=True
        )
        self._server_thread.start()
        try:
            for listener in self.listeners:
                listener.start()
            for timer in self.timers if self._run_timers else ():
                timer.start()
        except BaseException:
            self.stop()
            raise
        self._announce(options.route_prefix)
        return self

    def stop(self) -> None:
        """Stop timers and pollers (waiting for running invocations), then the HTTP server."""
        for timer in self.timers:
            timer.stop()
        for listener in self.listeners:
            listener.stop()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
            self._server_thread = None

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _build(self, functions: tuple[Any, ...], queue_options: QueueOptions) -> None:
        routes: list[HttpRoute] = []
        listeners: list[QueueListener] = []
        timers: list[TimerRunner] = []
        for function in functions:
            name = function.get_function_name()
            trigger = function.get_trigger().get_dict_repr()
            _refuse_other_bindings(function, trigger)
            kind = trigger["type"]
            if kind == "httpTrigger":
                routes.append(http_route(function))
            elif kind == "queueTrigger":
                setting = trigger.get("connection") or DEFAULT_STORAGE_SETTING
                queue = QueueFunction(
                    function_name=name,
                    arg_name=trigger["name"],
                    queue_name=trigger["queueName"],
                    connection_string=connection_string(setting, os.environ, name),
                    user_function=function.get_user_function(),
                )
                listeners.append(QueueListener(queue, queue_options))
            elif kind == "timerTrigger":
                timer = TimerFunction(
                    function_name=name,
                    arg_name=trigger["name"],
                    schedule=validate_ncrontab(name, trigger["schedule"]),
                    run_on_startup=bool(trigger.get("runOnStartup")),
                    user_function=function.get_user_function(),
                )
                timers.append(TimerRunner(timer))
            else:
                raise ConfigError(f"Functions.{name}: trigger type {kind!r} is not emulated by the local host")
        self.routes, self.listeners, self.timers = routes, listeners, timers

    def _announce(self, route_prefix: str) -> None:
        prefix = f"/{route_prefix}" if route_prefix else ""
        for route in self.routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            log.info("Functions: %s: [%s] %s%s/%s", route.function_name, methods, self.url, prefix, route.template)
        for listener in self.listeners:
            log.info(
                "Functions: %s: queueTrigger on '%s'", listener.function.function_name, listener.function.queue_name
            )
        for timer in self.timers:
            log.info("Functions: %s: timerTrigger '%s'", timer.function.function_name, timer.function.schedule)


def _refuse_other_bindings(function: Any, trigger: dict[str, Any]) -> None:
    for binding in function.get_bindings():
        spec = binding.get_dict_repr()
        if spec.get("name") == trigger["name"] or spec.get("type") == "http":
            continue  # the trigger itself, or an HTTP trigger's $return
        raise ConfigError(
            f"Functions.{function.get_function_name()}: binding {spec.get('type')!r} ({spec.get('name')!r}) "
            "is not emulated by the local host"
        )


def configure_logging() -> None:
    """Invocation logs to stderr like the host's console; the Azure SDKs' per-request logs only when they fail."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)


def create_app_storage(settings_file: Path) -> None:
    """Every queue, table and container of the sync service (idempotent), as ``make run`` creates them: in Azure the
    Bicep template does, and without them the app's first request or notification fails."""
    if settings_file.exists():
        apply_values(read_local_settings(settings_file).values)
    ensure_storage(StorageClients(Settings()))  # a missing or malformed setting fails here, naming it
    log.info("Storage ready: every queue, table and container of the app exists.")


def _serve_https_at(settings_file: Path, port: int | None) -> tuple[int, str]:
    """(port, host name) to serve HTTPS at, with ``PUBLIC_BASE_URL`` naming it.

    The app builds its OAuth redirect and decides the connect cookie's ``Secure`` from ``PUBLIC_BASE_URL``: the
    sample's ``http://`` one would give the cookie no ``Secure``, and a browser drops a ``SameSite=None`` cookie
    without it. So an ``http://`` (or missing) one becomes ``https://localhost:<port>`` (named by the certificate;
    the emulator's sign-in page at 127.0.0.1 is then another site, as Microsoft's is in Azure), saying so; an
    ``https://`` one (a tunnel, say) is kept."""
    settings = read_local_settings(settings_file) if settings_file.exists() else None
    if port is None:
        port = (settings.http_port if settings else None) or DEFAULT_PORT
    port = port or free_port()  # 0: any free port, chosen now so that the URL can name it
    configured = os.environ.get("PUBLIC_BASE_URL") or (settings.values.get("PUBLIC_BASE_URL") if settings else None)
    url = configured if configured and configured.startswith("https://") else f"https://localhost:{port}"
    os.environ["PUBLIC_BASE_URL"] = url  # over the settings file's value (an explicit variable wins there)
    if url == configured:
        return port, "localhost"
    log.warning(
        "PUBLIC_BASE_URL is %s; serving HTTPS, the app uses %s (a browser drops the connect flow's "
        "SameSite=None cookie unless it is Secure, which needs an https:// PUBLIC_BASE_URL)",
        configured or "not set",
        url,
    )
    return port, "localhost"


def main(argv: list[str] | None = None) -> None:
    """Run the host until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", default=DEFAULT_APP, help="module:attribute of the FunctionApp")
    parser.add_argument("--host-json", type=Path, default=ROOT / "host.json")
    parser.add_argument("--settings", type=Path, default=ROOT / "local.settings.json", help="local.settings.json")
    parser.add_argument("--port", type=int, default=None, help="default: Host.LocalHttpPort, else 7071")
    parser.add_argument(
        "--https", action="store_true", help="serve HTTPS with a certificate made now (its PEM in .run/local-host/)"
    )
    parser.add_argument(
        "--no-create-storage",
        action="store_true",
        help="do not create the sync service's queues, tables and containers first (created by default for "
        f"{DEFAULT_APP})",
    )
    parser.add_argument(
        "--no-timers",
        action="store_true",
        help="index the timer functions but never run them (a benchmark's extra instance: one quarter-hour tick "
        "would start a catch-up of every mailbox in the middle of its measurement)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    if args.app == DEFAULT_APP and not args.no_create_storage:
        create_app_storage(args.settings)
    port, tls, public_host = args.port, None, None
    if args.https:
        tls = make_self_signed(ROOT / ".run" / "local-host", "Functions local host", stem="local-host")
        port, public_host = _serve_https_at(args.settings, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    host = LocalHost(
        args.app,
        host_json=args.host_json,
        local_settings=args.settings,
        port=port,
        tls=tls,
        public_host=public_host,
        run_timers=not args.no_timers,
    )
    if tls:
        log.info("HTTPS: clients trust %s", tls.cert_path)
    with host, contextlib.suppress(KeyboardInterrupt):
        stop.wait()


if __name__ == "__main__":
    main()
