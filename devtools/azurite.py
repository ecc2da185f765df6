"""Start and stop Azurite (the real Azure Storage emulator, from npm) on free loopback ports, in memory (or, with
``location``, on disk: ``make demo`` keeps its data for ``make status``).

Used by the pytest session and by ``make run``. Flags per docs/offline-toolchain.md: ``--disableTelemetry`` (otherwise a
SIGTERM takes minutes), ``--skipApiVersionCheck`` (the Python SDKs send a newer API version than Azurite knows).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from devtools.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# The public, documented development account of every storage emulator: not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int


def connection_string(ports: AzuritePorts, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{ports.blob}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{ports.queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{ports.table}/{ACCOUNT};"
    )


class Azurite:
    """An Azurite process; use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self, ports: AzuritePorts | None = None, log_path: Path | None = None, location: Path | None = None
    ) -> None:
        self.ports = ports or AzuritePorts(free_port(), free_port(), free_port())
        self._log_path = log_path
        self._location = location
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports)

    @property
    def pid(self) -> int | None:
        """The node process's id while it runs (``make bench`` reads its CPU time)."""
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise FileNotFoundError(f"{AZURITE_BIN} is missing: run `make setup` (npm ci) first")
        args = [
            str(AZURITE_BIN),
            "--silent",
            *(["--location", str(self._location)] if self._location else ["--inMemoryPersistence"]),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(self.ports.blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.ports.queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.ports.table),
        ]  # fmt: skip
        self._log = self._log_path.open("ab") if self._log_path else None  # closed by stop()
        log = self._log or subprocess.DEVNULL
        # Its own process group, so stop() ends node and anything it spawned: no orphans.
        self._proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        try:
            for port in (self.ports.blob, self.ports.queue, self.ports.table):
                wait_for_port(port, timeout)
                if self._proc.poll() is not None:
                    raise RuntimeError(f"azurite exited with code {self._proc.returncode}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if self._log is not None:
            self._log.close()
            self._log = None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":  # a quick manual check: python -m devtools.azurite
    with Azurite() as az:
        print(az.connection_string)
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
