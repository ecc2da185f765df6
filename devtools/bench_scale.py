"""``make bench``, at scale (issue 11): one mailbox at Graph's per-mailbox limit, with a Graph latency of 150 ms.

1. A burst: 300 replies of one thread, their notifications in one batch POSTed to the webhook, synced by one host
   and then by two (the stack's host and a second ``devtools.local_host`` process on the same Azurite and emulator).
   The figure is messages per second from the POST to the last row, as a share of the ceiling Graph's limit sets:
   4 requests in flight per app and mailbox (CONTRACT.md section 8) of 150 ms each is 26.7 GETs a second, and a
   reply without attachments costs one GET. The emulator enforces the 4 (``concurrency``): any 429 in these runs
   is one our own concurrency caused.
2. The same burst, two hosts, under a low Graph throttle (``rate_limit`` requests per window per mailbox, refused
   requests counted too): no message may reach the Failures table or a poison queue, and every one is stored once.
3. A catch-up recovering replies whose notifications were all dropped: Graph requests per recovered message (the
   message GETs, and with the run's delta pages).
4. A mailbox holding 20,000 messages from before the connection: its first catch-up (delta from the sign-in time,
   section 7) finishes in one run and fetches none of them.
The stack's timers are stopped (the second host's run, but a quarter-hour tick in a run adds only its delta pages).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from devtools.azurite import Azurite
from devtools.emulator.notifier import DeliveryFaults
from devtools.ports import free_port, wait_for_port
from devtools.stack import Stack, offline_stack, wait_for
from sync_core import names
from sync_core.adapters.mailbox_gate import MAX_CONCURRENT_PER_MAILBOX
from sync_core.adapters.ops_store import FailureStore
from sync_core.catchup import catch_up
from sync_core.catchup_queue import CatchupRequest

ROOT = Path(__file__).resolve().parents[1]
CONTACT = "pat.parent@home.example"
LATENCY_MS = 150
CEILING = MAX_CONCURRENT_PER_MAILBOX / (LATENCY_MS / 1000)  # GETs per second at Graph's limit
BURST = 300
SHARE_TARGET = 0.8
THROTTLE = {"rate_limit": 120, "rate_window_seconds": 10.0}  # 12 requests/s: under half the ceiling
RECOVERED = 100
OLD_MAIL = 20_000


@dataclass(frozen=True)
class ScaleRow:
    measure: str
    figure: str
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Burst:
    seconds: float
    stored: int
    unique: int
    throttled: int  # 429s the emulator answered for the mailbox
    failures: int  # Failures rows of the inbound queue since the burst began
    requests: int


def say(text: str) -> None:
    print(f"[scale] {text}", flush=True)


def _thread(stack: Stack, mailbox: str) -> tuple[str, dict[str, Any], str]:
    user_id = f"bench-{uuid.uuid4().hex[:6]}"
    connection_id = stack.connect(user_id, mailbox)["connection_id"]
    body = {
        "user_id": user_id,
        "account_id": "bench",
        "kind": "individual",
        "contact": {"email": CONTACT},
        "subject": "Benchmark",
        "html": "<p>hello</p>",
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    response.raise_for_status()
    stack.settle()
    return user_id, dict(response.json()), connection_id


def _stored_ids(stack: Stack, user_id: str, thread_id: str) -> list[str]:
    view = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id})
    return [m["internet_message_id"] for m in view.json()["messages"]]


def _unnotified_replies(stack: Stack, mailbox: str, sent: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Replies Graph sends no notification for (the notifier drops them): the bench sends them itself, or not."""
    notifier = stack.emulator.subscriptions.notifier
    notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    spec = {"from": CONTACT, "subject": "RE: Benchmark", "in_reply_to": sent["internet_message_id"]}
    try:
        session = stack.control()
        url = f"{stack.emulator.base_url}/_emulator/mail/{mailbox}/deliver"

        def deliver(n: int) -> dict[str, Any]:
            response = session.post(url, json={**spec, "body_text": f"reply {n}"}, timeout=30)
            response.raise_for_status()
            return dict(response.json())

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(deliver, range(count)))
    finally:
        stack.flush()
        notifier.set_faults(DeliveryFaults())


def _notification(stack: Stack, connection_id: str, mailbox_id: str, message_id: str) -> dict[str, Any]:
    [sub] = stack.services.subscriptions.for_connection(connection_id)
    user = f"{mailbox_id}@{sub.tenant_id}"
    return {  # shaped like tests/graph_samples/change-notification-message-created.json
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


def _mailbox_id(stack: Stack, mailbox: str) -> str:
    return stack.world.mailbox(mailbox).id  # type: ignore[union-attr]


def _failures_since(stack: Stack, since: float) -> int:
    rows = FailureStore(stack.services.storage.tables).recent(names.QUEUE_INBOUND, limit=1000)
    poison = stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX)
    return sum(1 for r in rows if _at(r["at"]) >= since) + len(poison.peek_messages(max_messages=32))


def _at(iso: object) -> float:
    return dt.datetime.fromisoformat(str(iso)).timestamp()


def burst(stack: Stack, label: str, faults: dict[str, Any], timeout: float = 600) -> Burst:
    """300 replies, one notification batch: seconds from the POST until every one is stored."""
    mailbox = stack.new_mailbox(f"bench.{label}")
    user_id, sent, connection_id = _thread(stack, mailbox)
    replies = _unnotified_replies(stack, mailbox, sent, BURST)
    mailbox_id = _mailbox_id(stack, mailbox)
    batch = {"value": [_notification(stack, connection_id, mailbox_id, r["id"]) for r in replies]}
    stack.emulator.faults.configure(concurrency=MAX_CONCURRENT_PER_MAILBOX, latency_ms=LATENCY_MS, **faults)
    mark, since = len(stack.emulator.log.snapshot()), time.time()
    try:
        started = time.monotonic()
        answer = requests.post(f"{stack.enrollio.base_url}/api/graph/notifications", json=batch, timeout=30)
        answer.raise_for_status()
        wait_for(
            lambda: len(_stored_ids(stack, user_id, sent["thread_id"])) >= BURST + 1, f"{label}: every reply", timeout
        )
        seconds = time.monotonic() - started
        stack.settle(timeout=60)
    finally:
        stack.emulator.faults.reset()
    ids = _stored_ids(stack, user_id, sent["thread_id"])[1:]
    entries = [e for e in stack.emulator.log.snapshot()[mark:] if e.mailbox_id == mailbox_id]
    return Burst(
        seconds=seconds,
        stored=len(ids),
        unique=len(set(ids) & {r["internetMessageId"] for r in replies}),
        throttled=sum(e.status == 429 for e in entries),
        failures=_failures_since(stack, since),
        requests=len(entries),
    )


class SecondHost:
    """Another instance of the app: ``python -m devtools.local_host`` in its own process, on the stack's storage and
    emulator (their settings are in this process's environment, which it inherits)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.settings = workdir / "second-host.settings.json"
        self.settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SecondHost:
        command = [sys.executable, "-m", "devtools.local_host", "--no-create-storage", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--settings", str(self.settings)],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def recovered_by_catch_up(stack: Stack) -> tuple[int, int, int, dict[str, int]]:
    """Replies whose notifications all dropped, recovered by one catch-up run: (recovered, message GETs, delta
    pages, the run's tally)."""
    mailbox = stack.new_mailbox("bench.recover")
    user_id, sent, connection_id = _thread(stack, mailbox)
    catch_up(_request(stack, user_id, connection_id), stack.services)  # the cursors are past the thread's start
    _unnotified_replies(stack, mailbox, sent, RECOVERED)
    mailbox_id = _mailbox_id(stack, mailbox)
    stack.emulator.faults.configure(concurrency=MAX_CONCURRENT_PER_MAILBOX, latency_ms=LATENCY_MS)
    mark = len(stack.emulator.log.snapshot())
    try:
        tally = catch_up(_request(stack, user_id, connection_id), stack.services)
    finally:
        stack.emulator.faults.reset()
    entries = [e for e in stack.emulator.log.snapshot()[mark:] if e.mailbox_id == mailbox_id]
    pages = sum(e.route.endswith("/messages/delta") for e in entries)
    recovered = len(_stored_ids(stack, user_id, sent["thread_id"])) - 1
    return recovered, len(entries) - pages, pages, tally


def _request(stack: Stack, user_id: str, connection_id: str) -> CatchupRequest:
    return CatchupRequest(
        user_id=user_id, connection_id=connection_id, reason="bench", requested_at=stack.services.clock.now()
    )


def first_catch_up_of_a_full_mailbox(stack: Stack) -> tuple[float, int, int, dict[str, int]]:
    """20,000 messages delivered before the sign-in: (seconds, delta pages, other Graph requests, tally)."""
    mailbox = stack.new_mailbox("bench.full")
    session = stack.control()
    url = f"{stack.emulator.base_url}/_emulator/mail/{mailbox}/deliver"

    def old(n: int) -> None:
        spec = {"from": f"someone{n % 50}@elsewhere.example", "subject": f"old {n}", "body_text": "old mail"}
        session.post(url, json=spec, timeout=30).raise_for_status()

    say(f"delivering {OLD_MAIL:,} messages before the connection...")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(old, range(OLD_MAIL)))
    time.sleep(1.1)  # the sign-in's second is after theirs (Graph shows receivedDateTime in whole seconds)
    user_id, _, connection_id = _thread(stack, mailbox)
    mailbox_id = _mailbox_id(stack, mailbox)
    mark = len(stack.emulator.log.snapshot())
    started = time.monotonic()
    tally = catch_up(_request(stack, user_id, connection_id), stack.services)
    seconds = time.monotonic() - started
    entries = [e for e in stack.emulator.log.snapshot()[mark:] if e.mailbox_id == mailbox_id]
    pages = sum(e.route.endswith("/messages/delta") for e in entries)
    return seconds, pages, len(entries) - pages, tally


def _share_row(label: str, b: Burst) -> ScaleRow:
    rate = b.stored / b.seconds
    figure = (
        f"{rate:.1f} msg/s = {rate / CEILING:.0%} of {CEILING:.1f}/s; {b.throttled} x 429; "
        f"{b.stored} stored ({b.unique} distinct); {b.requests} Graph requests"
    )
    met = rate >= SHARE_TARGET * CEILING and b.throttled == 0 and b.unique == b.stored == BURST
    return ScaleRow(f"burst of {BURST}, one mailbox, {label}", figure, f">= {SHARE_TARGET:.0%}, zero 429s", met)


def measure(azurite: Azurite, workdir: Path) -> list[ScaleRow]:
    """Every figure of this module, on a fresh stack."""
    rows: list[ScaleRow] = []
    with offline_stack(azurite) as stack:
        for timer in stack.host.timers:
            timer.stop()
        say(f"a burst of {BURST} replies, one host, Graph latency {LATENCY_MS} ms...")
        rows.append(_share_row("one host", burst(stack, "one", {})))
        say("the second host is starting...")
        with SecondHost(workdir):
            say(f"a burst of {BURST} replies, two hosts...")
            rows.append(_share_row("two hosts", burst(stack, "two", {})))
            say(f"a burst of {BURST} replies, two hosts, Graph throttling at {THROTTLE}...")
            b = burst(stack, "throttled", THROTTLE)
        figure = (
            f"{b.failures} poisoned/failed, {b.stored} stored ({b.unique} distinct), {b.throttled} x 429, "
            f"{b.stored / b.seconds:.1f} msg/s"
        )
        met = b.failures == 0 and b.unique == b.stored == BURST
        rows.append(ScaleRow(f"burst of {BURST}, two hosts, low Graph throttle", figure, "0 poisoned, each once", met))
        say(f"a catch-up recovering {RECOVERED} replies whose notifications were dropped...")
        recovered, fetches, pages, tally = recovered_by_catch_up(stack)
        per = fetches / max(recovered, 1)
        rows.append(
            ScaleRow(
                f"Graph requests per message recovered by catch-up ({recovered} recovered)",
                f"{per:.2f} fetches + {pages} delta pages ({(fetches + pages) / max(recovered, 1):.2f} in all)",
                "<= 1 + attachments (here 1)",
                per <= 1 and recovered == RECOVERED,
            )
        )
        seconds, pages, fetched, tally = first_catch_up_of_a_full_mailbox(stack)
        one_run = "paused" not in tally and not any(k.startswith("re-queued") for k in tally)
        rows.append(
            ScaleRow(
                f"first catch-up, {OLD_MAIL:,} messages from before the connection",
                f"{'one run' if one_run else 'SEVERAL runs'} of {seconds:.1f} s, {pages} delta pages, "
                f"{fetched} other requests",
                "one run, 0 fetched",
                one_run and fetched == 0,
            )
        )
    return rows


def main() -> None:
    """``python -m devtools.bench_scale``: only these figures."""
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        rows = measure(azurite, Path(tmp))
    for r in rows:
        verdict = "" if r.met is None else "met" if r.met else "MISSED"
        print(f"{verdict.upper():>6}  {r.measure}: {r.figure}; target {r.target}")


if __name__ == "__main__":
    main()
