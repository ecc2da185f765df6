"""``make run`` (``python -m devtools.run``): it comes up, /api/health answers 200, Ctrl-C leaves no process behind.

Also its inputs: the sample settings cover every setting, and the port and secret choices.
"""

from __future__ import annotations

import base64
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import requests

from devtools.local_host_config import read_local_settings
from devtools.run import SAMPLE_SETTINGS, configure, dev_secrets, preferred_or_free
from sync_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APP_SETTING_NAMES = {field.alias or name for name, field in Settings.model_fields.items()}


# -- the whole thing, as a developer runs it -------------------------------------------------------------


def children_of(pid: int) -> dict[int, str]:
    """Every descendant of ``pid`` (from /proc), with its start time to tell a reused pid apart."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    pending = list(parents.get(pid, []))
    while pending:
        child = pending.pop()
        found[child] = started[child]
        pending.extend(parents.get(child, []))
    return found


def alive(pid: int, start_time: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start_time and fields[0] != "Z"


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    # A clean environment: none of the app's settings leak in from this test process.
    env = {k: v for k, v in os.environ.items() if k not in APP_SETTING_NAMES}
    stderr = (tmp_path / "run.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stderr.close()


def _pump(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
    for line in stream or ():
        lines.put(line.rstrip("\n"))


def read_until_ready(lines: queue.Queue[str], timeout: float = 60.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    printed: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line.startswith("Ready."):
            return printed
        label, _, value = line.partition(":")
        printed[label.strip()] = value.strip()
    pytest.fail(f"devtools.run printed no 'Ready.' line within {timeout:.0f}s; printed {printed}")


@pytest.mark.slow
def test_make_run_serves_health_and_ctrl_c_stops_all_three(run: tuple[subprocess.Popen[str], queue.Queue[str]]) -> None:
    proc, lines = run
    printed = read_until_ready(lines)

    assert {"Azurite blob", "Azurite queue", "Azurite table", "Graph emulator", "Authority", "Health"} <= set(printed)
    health = requests.get(printed["Health"], timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"

    descendants = children_of(proc.pid)
    assert any("azurite" in command_name(pid) for pid in descendants), "expected Azurite among run's children"

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert [command_name(pid) for pid, start in descendants.items() if alive(pid, start)] == []
    host_port = int(printed["Functions host"].rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", host_port), timeout=1):
        pass


# -- its inputs --------------------------------------------------------------------------------------------


def test_the_sample_settings_set_every_setting_and_validate() -> None:
    values = read_local_settings(SAMPLE_SETTINGS).values
    # Identity-based storage (AzureWebJobsStorage__*) is Azure's alternative to the connection string.
    needed = {name for name in APP_SETTING_NAMES if "__" not in name}

    assert needed - set(values) == set()
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    Settings(**values)  # type: ignore[arg-type]
    assert all("DEV-ONLY-not-a-secret" in values[k] for k in ("GRAPH_CLIENT_SECRET", "ENROLLIO_SHARED_SECRET"))


def test_run_sets_what_it_started_generates_secrets_and_keeps_explicit_ones(tmp_path: Path) -> None:
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(SAMPLE_SETTINGS.read_text())
    environ = {"ENROLLIO_SHARED_SECRET": "mine", "AzureWebJobsStorage": "stale", "PUBLIC_BASE_URL": "stale"}
    started = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "PUBLIC_BASE_URL": "http://127.0.0.1:7072"}

    settings = configure(environ, started, settings_file)

    assert environ["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert settings.public_base_url == "http://127.0.0.1:7072"
    assert settings.enrollio_shared_secret.get_secret_value() == "mine"
    assert "DEV-ONLY" not in settings.graph_client_secret.get_secret_value()
    assert settings.graph_client_id == "enrollio-local-dev"


def test_dev_secrets_are_fresh_each_run_and_the_key_is_32_bytes() -> None:
    first, second = dev_secrets({}), dev_secrets({})
    assert first["GRAPH_CLIENT_SECRET"] != second["GRAPH_CLIENT_SECRET"]
    kid, _, key = first["TOKEN_ENCRYPTION_KEYS"].partition(":")
    assert kid == "k1"
    assert len(base64.b64decode(key)) == 32


def test_a_busy_preferred_port_falls_back_to_a_free_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert preferred_or_free(taken) != taken
    assert preferred_or_free(taken) == taken
