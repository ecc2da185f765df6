"""Peak memory measured in a child process, for ``make bench``: the parent runs the offline stack (Azurite, the
in-process emulator, the local host), the child runs one use case of ``sync_core`` against it with tracemalloc on.

Measured in the parent, tracemalloc would count the in-process emulator (which keeps every byte it is sent) and
whatever the host's workers do meanwhile; in the child it counts the use case alone. The child gets the stack's
settings as its environment, warms its clients with one small call first, and prints one JSON line.

- ``python -m devtools.bench_memory send USER_ID SIZE``: ``send.send`` with one SIZE-byte attachment; the request
  body is built before the baseline, as the Functions host holds it before the app is called;
- ``python -m devtools.bench_memory sync USER_ID CONNECTION_ID MESSAGE_ID``: ``inbound.sync_message`` of one message.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

from devtools.stack import Stack, settings_environment

CONTACT = "pat.parent@home.example"


def send_body(user_id: str, size: int, seed: str = "bench") -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": user_id,
        "account_id": "bench",
        "kind": "individual",
        "contact": {"email": CONTACT},
        "subject": "Benchmark",
        "html": "<p>the term schedule</p>",
    }
    if size:
        data = (seed.encode() * (size // len(seed) + 1))[:size]
        body["attachments"] = [{"name": "schedule.pdf", "content_base64": base64.b64encode(data).decode()}]
    return body


def run_child(stack: Stack, *args: str) -> dict[str, Any]:
    """Run ``python -m devtools.bench_memory ARGS`` against ``stack``; its JSON answer."""
    env = {**os.environ, **settings_environment(stack.settings)}
    child = subprocess.run(
        [sys.executable, "-m", "devtools.bench_memory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"bench failed: the memory child {args[0]} exited {child.returncode}: {child.stderr[-2000:]}")
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def peak_of(call: Callable[[], Any]) -> tuple[int, Any]:
    """Peak traced bytes above the baseline while ``call`` runs, and what it returned."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        result = call()
        return tracemalloc.get_traced_memory()[1] - baseline, result
    finally:
        tracemalloc.stop()


def _send(user_id: str, size: int) -> dict[str, Any]:
    from sync_core.clock import SystemClock
    from sync_core.send import send
    from sync_core.services import Services
    from sync_core.settings import get_settings

    services = Services(get_settings(), SystemClock())
    send(uuid.uuid4().hex, json.dumps(send_body(user_id, 1000, "warm")).encode(), services)
    body = json.dumps(send_body(user_id, size)).encode()
    peak, answer = peak_of(lambda: send(uuid.uuid4().hex, body, services))
    return {"peak": peak, "status": answer.status, "route": answer.body.get("route")}


def _sync(user_id: str, connection_id: str, message_id: str) -> dict[str, Any]:
    from sync_core.clock import SystemClock
    from sync_core.inbound import MessageRef, sync_message
    from sync_core.services import Services
    from sync_core.settings import get_settings

    services = Services(get_settings(), SystemClock())
    services.storage.blobs.get_service_properties()  # the storage clients, built and connected
    services.graph_for(services.connections.get(user_id, connection_id)).get_json("/me")  # type: ignore[arg-type]
    ref = MessageRef(user_id=user_id, connection_id=connection_id, message_id=message_id)
    peak, result = peak_of(lambda: sync_message(ref, services))
    return {"peak": peak, "outcome": result.outcome.value}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1:2] == ["send"] and len(sys.argv) == 4:
        print(json.dumps(_send(sys.argv[2], int(sys.argv[3]))))
    elif sys.argv[1:2] == ["sync"] and len(sys.argv) == 5:
        print(json.dumps(_sync(*sys.argv[2:5])))
    else:
        raise SystemExit(__doc__)
