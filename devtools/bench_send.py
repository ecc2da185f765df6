"""``make bench``'s send figures (``devtools/bench.py`` reports them).

5. Graph requests per ``POST /api/send`` by attachment size: the emulator's log for the sending mailbox while one
   send runs, with the inbound worker stopped (its fetches of the draft and the Sent Items copy are not the send's).
   Target: the draft, one POST per file under 3 MB, one createUploadSession plus one PUT per 3,932,160-byte range
   per larger file, and the send.
6. Peak memory of one send with a 10 MiB attachment through an upload session, above the baseline, measured in
   a child process (``devtools/bench_memory.py``). The request body (13.3 MiB of JSON) is built before the
   baseline, as the Functions host holds it before the app is called: the figure is what the send adds to it (the
   parsed base64 string, 13.3 MiB, and buffers). Target: no more than twice the file.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from typing import Any

from devtools.bench_memory import run_child, send_body
from devtools.stack import Stack
from sync_core import names
from sync_core.send_attachments import POST_LIMIT, RANGE_BYTES

MIB = 1024 * 1024
# 25 MiB is the largest whole MiB under the default 35 MiB limit as Exchange counts it (encoded: 34.2 MiB).
SEND_SIZES = (0, 1 * MIB, 3 * MIB, 10 * MIB, 25 * MIB)
MEMORY_FILE = 10 * MIB
MEMORY_FACTOR = 2


def expected_requests(size: int) -> int:
    """Draft + attachment (one POST, or a session and its ranges) + send."""
    if not size:
        return 2
    return 2 + (1 if size < POST_LIMIT else 1 + math.ceil(size / RANGE_BYTES))


def stop_inbound_worker(stack: Stack) -> None:
    for listener in stack.host.listeners:
        if listener.function.queue_name == names.QUEUE_INBOUND:
            listener.stop()


def graph_requests_per_send(stack: Stack, user_id: str, mailbox: str, size: int) -> Counter[str]:
    """The emulator's routes (with counts) for one send with one attachment of ``size`` bytes."""
    found = stack.world.mailbox(mailbox)
    assert found is not None
    stack.flush()
    stack.emulator.log.clear()
    response = stack.enrollio.call(
        "POST", "/api/send", body=send_body(user_id, size), headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    if response.status_code != 200:
        raise SystemExit(f"bench failed: a send with {size} bytes answered {response.status_code} {response.text}")
    return Counter(e.route for e in stack.emulator.log.snapshot() if e.mailbox_id == found.id)


def send_peak_memory(stack: Stack, user_id: str) -> dict[str, Any]:
    """One send with a ``MEMORY_FILE``-byte attachment, measured in a child process: peak bytes, status, route."""
    return run_child(stack, "send", user_id, str(MEMORY_FILE))
