"""``make run``: Azurite, the Graph + identity emulator and the local Functions host, wired together.

- Azurite on 10000/10001/10002 when all three are free (else free ports), in memory, logging to ``.run/``;
- the emulator on 8443 when free (else a free port), with demo mailboxes and an app registration for
  ``GRAPH_CLIENT_ID`` whose redirect URI is this host's OAuth callback; its certificate is written to
  ``.run/emulator/``;
- the local host (``devtools.local_host``) on 7071 when free (else a free port), every queue, table and container
  created first;
- this run's settings in ``.run/local.settings.json`` while it runs, for ``make status`` (the operator's CLI).
The environment gets the addresses of what was started (always) and fresh random dev secrets (unless already set);
every other setting comes from ``local.settings.json``, or ``local.settings.sample.json`` when there is none.
Ctrl-C or SIGTERM stops all three; Azurite's process group goes with it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from devtools.azurite import Azurite, AzuritePorts
from devtools.emulator import EmulatorServer, World
from devtools.local_host import LocalHost, configure_logging
from devtools.local_host_config import apply_values, read_local_settings
from devtools.ports import free_port
from sync_core.adapters.storage import StorageClients, ensure_storage
from sync_core.connect import CALLBACK_ROUTE
from sync_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
LOCAL_SETTINGS = ROOT / "local.settings.json"
RUN_SETTINGS = RUN_DIR / "local.settings.json"  # this run's settings, for `make status`; removed when it stops
SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
STORAGE_PORTS = AzuritePorts(10000, 10001, 10002)
EMULATOR_PORT = 8443
HOST_PORT = 7071
# Fixed, so the authority in local.settings.sample.json matches the emulator `make run` starts.
DEV_TENANT_ID = "00000000-0000-4000-8000-000000000001"
DEMO_MAILBOXES = ("alex.teacher@school.example", "sam.office@school.example")
DEFAULT_CLIENT_ID = "enrollio-local-dev"


def port_is_free(port: int) -> bool:
    """True when nothing holds ``127.0.0.1:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def preferred_or_free(port: int) -> int:
    """``port`` if it is free, else any free port."""
    return port if port_is_free(port) else free_port()


def storage_ports() -> AzuritePorts:
    """The well-known Azurite ports when all three are free (``UseDevelopmentStorage=true`` then works too)."""
    if all(port_is_free(p) for p in (STORAGE_PORTS.blob, STORAGE_PORTS.queue, STORAGE_PORTS.table)):
        return STORAGE_PORTS
    return AzuritePorts(free_port(), free_port(), free_port())


def dev_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """Fresh random secrets for this run, except those the environment already sets."""
    generated = {
        "GRAPH_CLIENT_SECRET": secrets.token_urlsafe(24),
        "ENROLLIO_SHARED_SECRET": secrets.token_urlsafe(32),
        "TOKEN_ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    return {key: environ.get(key) or value for key, value in generated.items()}


def configure(environ: MutableMapping[str, str], addresses: Mapping[str, str], settings_file: Path) -> Settings:
    """Addresses of what was started win, dev secrets fill in, the settings file fills the rest; then validate."""
    environ.update(addresses)
    environ.update(dev_secrets(environ))
    apply_values(read_local_settings(settings_file).values, environ)
    environ.setdefault("GRAPH_CLIENT_ID", DEFAULT_CLIENT_ID)
    names = {field.alias or name for name, field in Settings.model_fields.items()}
    values = {key: value for key, value in environ.items() if key in names}
    # By alias from a str mapping: mypy matches every key against BaseSettings' own _-prefixed init options.
    return Settings(**values)  # type: ignore[arg-type]


def main() -> None:
    """Start everything, print the addresses, wait for Ctrl-C or SIGTERM, stop everything."""
    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    RUN_DIR.mkdir(exist_ok=True)
    settings_file = LOCAL_SETTINGS if LOCAL_SETTINGS.exists() else SAMPLE_SETTINGS
    with contextlib.ExitStack() as running, contextlib.suppress(KeyboardInterrupt):
        azurite = running.enter_context(Azurite(storage_ports(), log_path=RUN_DIR / "azurite.log"))
        world = World(tenant_id=DEV_TENANT_ID)
        for address in DEMO_MAILBOXES:
            world.add_mailbox(address)
        emulator = running.enter_context(
            EmulatorServer(world, port=preferred_or_free(EMULATOR_PORT), workdir=RUN_DIR / "emulator")
        )
        host_url = f"http://127.0.0.1:{preferred_or_free(HOST_PORT)}"
        settings = configure(
            os.environ,
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "GRAPH_AUTHORITY": emulator.authority,
                "GRAPH_BASE_URL": emulator.graph_base_url,
                "GRAPH_CA_BUNDLE": str(emulator.ca_path),
                "PUBLIC_BASE_URL": host_url,
            },
            settings_file,
        )
        emulator.identity.register_app(
            settings.graph_client_id,
            settings.graph_client_secret.get_secret_value(),
            [f"{host_url}/api/{CALLBACK_ROUTE}"],
        )
        ensure_storage(StorageClients(settings))
        host = running.enter_context(LocalHost(local_settings=None, port=int(host_url.rsplit(":", 1)[1])))
        running.callback(RUN_SETTINGS.unlink, missing_ok=True)
        _write_run_settings(settings)
        _print_addresses(azurite, emulator, host.url, settings_file)
        stop.wait()


def _write_run_settings(settings: Settings) -> None:
    """This run's settings in Core Tools' format (dev secrets of this run only; ``.run/`` is never committed)."""
    values = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is not None:
            values[field.alias or name] = str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    RUN_SETTINGS.unlink(missing_ok=True)
    with os.fdopen(os.open(RUN_SETTINGS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:  # owner only
        json.dump({"IsEncrypted": False, "Values": values}, out, indent=2)


def _print_addresses(azurite: Azurite, emulator: EmulatorServer, host_url: str, settings_file: Path) -> None:
    ports = azurite.ports
    mailboxes = ", ".join(m.address for m in emulator.world.mailboxes.values())
    lines = [
        f"Settings:        {settings_file.name} (+ the addresses below and this run's dev secrets)",
        f"Azurite blob:    http://127.0.0.1:{ports.blob}/devstoreaccount1",
        f"Azurite queue:   http://127.0.0.1:{ports.queue}/devstoreaccount1",
        f"Azurite table:   http://127.0.0.1:{ports.table}/devstoreaccount1",
        f"Graph emulator:  {emulator.base_url}  (CA certificate: {emulator.ca_path})",
        f"Authority:       {emulator.authority}",
        f"Graph:           {emulator.graph_base_url}  (mailboxes: {mailboxes})",
        f"Functions host:  {host_url}",
        f"Health:          {host_url}/api/health",
        "Ready. Ctrl-C stops all three.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
