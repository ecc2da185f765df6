"""What a process spends on Azure Storage and on Graph, for ``make bench``: every HTTP request the process sends
(the Azure SDKs and the Graph client both send through ``requests.Session.send``), counted and timed by where it
goes: ``storage`` (Azurite's account path, by operation: method and table, container or queue) or ``graph`` (any
other address).

``python -m devtools.request_tally TALLY.json [local_host arguments]`` runs ``devtools.local_host`` with the tally
on and rewrites ``TALLY.json`` every half second (and at exit), so a benchmark reads it before and after a run and
takes the difference. Seconds are summed over the process's threads (eight requests in flight for one second count
eight seconds).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from devtools.azurite import ACCOUNT

WRITE_EVERY_SECONDS = 0.5


class RequestTally:
    """Requests counted and timed by kind: ``storage GET Threads``, ``graph``..."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        """Count every request of this process from now on (``requests.Session.send`` wrapped, once)."""
        original = requests.Session.send
        tally = self

        def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            started = time.monotonic()
            try:
                return original(session, request, **kwargs)
            finally:
                tally.add(kind_of(str(request.method), str(request.url)), time.monotonic() - started)

        requests.Session.send = send  # type: ignore[method-assign,assignment]

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.counts[kind] += 1
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {"counts": dict(self.counts), "seconds": dict(self.seconds)}


def kind_of(method: str, url: str) -> str:
    """``storage <METHOD> <table, container or queue>`` for Azurite's account, else ``graph``."""
    parts = urlsplit(url).path.split("/")
    if len(parts) < 3 or parts[1] != ACCOUNT:
        return "graph"
    resource = parts[2].split("(")[0] or "(account)"
    lease = " lease" if "comp=lease" in urlsplit(url).query else ""
    return f"storage {method} {resource}{lease}"


def main(argv: list[str]) -> None:
    """Run ``devtools.local_host`` with the tally written to ``argv[0]``."""
    from devtools import local_host

    path, rest = Path(argv[0]), argv[1:]
    tally = RequestTally()
    tally.install()
    done = threading.Event()

    def keep_writing() -> None:
        while not done.wait(WRITE_EVERY_SECONDS):
            _write(path, tally)

    writer = threading.Thread(target=keep_writing, name="request-tally", daemon=True)
    writer.start()
    try:
        local_host.main(rest)
    finally:
        done.set()
        _write(path, tally)


def _write(path: Path, tally: RequestTally) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(tally.snapshot()))
    partial.replace(path)  # a reader never sees half a file


if __name__ == "__main__":
    main(sys.argv[1:])
