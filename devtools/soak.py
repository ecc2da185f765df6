"""``make soak``: many mailboxes, a thousand messages, Graph misbehaving and a host killed; then every message is
checked. A soak, not a benchmark: it fails (exit 1) on any message lost, duplicated or wrongly stored.

What runs: Azurite, the Graph + identity emulator, and two local Functions hosts on that one Azurite: host A in
this process (Graph's notifications go to it) and host B a subprocess (``python -m devtools.local_host``), both
polling the same queues, as two Flex Consumption instances do. Then:

1. ``--mailboxes`` users each connect a mailbox and send two emails from Enrollio (two threads, two contacts),
   before any fault is switched on.
2. Faults on (``--seed`` makes them repeatable): Graph answers 429 past ``--rate-limit`` requests per mailbox in a
   5-second window (``Retry-After`` until the window frees) and for a few message requests whatever the rate
   (``fail_paths``: the rate limit's 429s depend on the machine's speed), 503 with ``Retry-After`` for a share,
   adds ``--latency-ms`` to each, and refuses a fifth concurrent request per mailbox (Outlook's limit);
   notifications are dropped, duplicated and reordered.
3. About ``--messages`` messages arrive, from ``--senders`` threads (each a share of the mailboxes, in order):
   the contacts' replies (some with a small attachment), the users' replies written in Outlook, replies with an
   attachment over the 3 MB cap, threads the users start in Outlook, and unrelated mail from strangers. Halfway
   through, host B is killed (SIGKILL): the queue messages it had taken stay hidden for its lease (the local host
   takes them for 10 minutes), its mailbox slots come free after theirs (30 s).
4. Once nothing more is stored for 15 s, the catch-up the timer requests runs (``schedule_catchups`` as at a tick
   when every connection is due, the requests not spread over the quarter hour): the messages of lost
   notifications, and those the killed host held, are found by delta. Converged: every expected message stored.
5. Unless ``--no-drain``, the killed host's leased messages are waited for (up to 15 minutes) so that their
   redelivery is judged too. Then every thread is read through Enrollio's read API (``GET
   /api/threads/{id}/messages``, ``GET /api/users/{id}/skips``) and compared with what was sent: each message
   carries a tag ``[soak-N]`` in its subject.

Printed: expected vs stored exactly once, missing, duplicated (more than one copy in Enrollio's view of its thread,
or more than one row anywhere in the ``Messages`` table, whatever the thread or user), wrongly stored
(Outlook-started or unrelated mail stored; an over-cap reply stored, or skipped without ``attachment_too_large``),
poison (messages in the poison queues or the Failures table), Graph requests, 429s and 503s, GETs per message
fetched (a message fetched again is not a failure: retries and redeliveries do it; stored twice is), the
notifications the fault dropped, and the time to
converge after the last message arrived. ``tests/integration/test_soak.py`` runs a small seeded soak in ``make
test``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from devtools.emulator.notifier import DeliveryFaults
from devtools.ports import free_port
from devtools.stack import Stack, offline_stack, wait_for
from sync_core import names
from sync_core.adapters.thread_store import MessageStore
from sync_core.catchup import schedule_catchups
from sync_core.catchup_schedule import MAX_INTERVAL
from sync_core.ops.overview import queue_depths, recent_failures

MIB = 1024 * 1024
OVERSIZE_BYTES = 3 * MIB + 128 * 1024  # over the cap by more than Graph's overhead allowance: skipped on its size
SMALL_FILE_BYTES = 20_000
TAG = re.compile(r"\[soak-(\d+)\]")
MESSAGE_GET = re.compile(r"^/v1\.0/users/[^/]+/messages/([^/]+)$")
RATE_WINDOW_SECONDS = 5.0
PROGRESS_SECONDS = 5.0
SCRIPTED_429_AFTER, SCRIPTED_429S = 40, 6
KILL_WAIT_SECONDS = 60.0  # at most this long for host B's first inbound invocation before it is killed
LEASE_WAIT_SECONDS = 900.0  # the local host leases a queue message for 600 s: a killed host's come back after it
ROOT = Path(__file__).resolve().parent.parent


class Kind(StrEnum):
    CONTACT_REPLY = "contact reply"
    OUTLOOK_REPLY = "Outlook reply"
    OVERSIZE = "over-cap reply"
    OUTLOOK_STARTED = "Outlook-started"
    UNRELATED = "unrelated"


# The mix of arriving mail (weights); each kind's expected outcome is in ``expected_outcome``.
MIX = {
    Kind.CONTACT_REPLY: 45,
    Kind.OUTLOOK_REPLY: 25,
    Kind.OVERSIZE: 4,
    Kind.OUTLOOK_STARTED: 11,
    Kind.UNRELATED: 15,
}
STORED_KINDS = (Kind.CONTACT_REPLY, Kind.OUTLOOK_REPLY)


@dataclass(frozen=True)
class SoakOptions:
    mailboxes: int = 20
    messages: int = 1000
    seed: int = 11
    latency_ms: int = 20
    rate_limit: int = 30  # requests per mailbox per 5 s before Graph answers 429
    fail_503_rate: float = 0.03
    drop_rate: float = 0.05
    duplicate_rate: float = 0.05
    reorder_rate: float = 0.2
    senders: int = 4  # mail arrives from this many threads at once (each a share of the mailboxes)
    kill_at: float = 0.5  # host B is killed when this share of the messages has arrived
    converge_timeout: float = 600.0
    stall_seconds: float = 15.0  # push is done when nothing more was stored for this long
    drain: bool = True  # at the end, wait for the killed host's leased messages to come back and be judged too
    catch_up: bool = True  # False shows what push alone delivers (the dropped notifications' mail is missing)


@dataclass
class Mailbox:
    user_id: str
    address: str
    threads: list[dict[str, Any]] = field(default_factory=list)  # the send answers: thread_id, internet_message_id
    contacts: list[str] = field(default_factory=list)
    replies: dict[int, str] = field(default_factory=dict)  # thread index -> Graph id of a contact's reply in it


@dataclass(frozen=True)
class Sent:
    tag: int
    kind: Kind
    mailbox: int
    thread: int


@dataclass
class Report:
    """What the soak found, in the terms a user and an operator see it."""

    expected: int = 0
    stored_once: int = 0
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    wrongly_stored: list[str] = field(default_factory=list)
    skipped_right: int = 0
    oversize: int = 0
    poison: int = 0
    failures: list[str] = field(default_factory=list)
    graph_requests: int = 0
    throttled: int = 0
    unavailable: int = 0
    notifications_dropped: int = 0
    killed_after: int = 0  # invocations host B had finished when it was killed
    converge_seconds: float | None = None
    push_stored: int = 0  # stored exactly once before the catch-up ran
    held_back: int = 0  # inbound queue messages still hidden when the mail had converged (a killed host's lease)
    by_kind: Counter[str] = field(default_factory=Counter)
    message_gets: Counter[str] = field(default_factory=Counter)  # GETs of each message (Graph id), 429s included

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.wrongly_stored) and self.skipped_right == self.oversize


STARTED = time.monotonic()


class Arrivals:
    """Counts the arriving mail across the sender threads, and says when host B is to be killed."""

    def __init__(self, total: int, kill_at: int) -> None:
        self.total, self.kill_at = total, kill_at
        self.kinds: dict[int, Kind] = {}
        self._lock = threading.Lock()

    def count(self, tag: int, kind: Kind) -> bool:
        """Count one arrival; True for the one at which host B is to be killed."""
        with self._lock:
            self.kinds[tag] = kind
            return len(self.kinds) == self.kill_at


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def plan(options: SoakOptions) -> list[Sent]:
    """The arriving mail, interleaved across mailboxes, from ``options.seed``."""
    rng = random.Random(options.seed)
    kinds, weights = list(MIX), list(MIX.values())
    out = []
    for tag in range(options.messages):
        out.append(Sent(tag, rng.choices(kinds, weights)[0], rng.randrange(options.mailboxes), rng.randrange(2)))
    return out


def connect_all(stack: Stack, count: int) -> list[Mailbox]:
    boxes = []
    for i in range(count):
        box = Mailbox(f"soak-user-{i:03d}-{uuid.uuid4().hex[:6]}", stack.new_mailbox(f"soak{i:03d}"))
        stack.connect(box.user_id, box.address)
        for t in range(2):
            contact = f"contact-{i:03d}-{t}@home.example"
            body = {
                "user_id": box.user_id,
                "account_id": "soak",
                "kind": "individual",
                "contact": {"email": contact},
                "subject": f"Soak {i}/{t}",
                "html": "<p>hello</p>",
            }
            answer = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            answer.raise_for_status()
            box.threads.append(answer.json())
            box.contacts.append(contact)
        boxes.append(box)
        if (i + 1) % 5 == 0 or i + 1 == count:
            say(f"   {i + 1}/{count} mailboxes connected, 2 threads each sent from Enrollio")
    return boxes


def deliver(stack: Stack, box: Mailbox, sent: Sent) -> Kind:
    """Make ``sent`` happen in the emulator's mailbox; the kind it became (an Outlook reply needs a contact's
    message to reply to: before the first one, it becomes a contact reply)."""
    tag = f"[soak-{sent.tag}]"
    thread = box.threads[sent.thread]
    contact = box.contacts[sent.thread]
    kind = sent.kind
    if kind is Kind.OUTLOOK_REPLY and sent.thread not in box.replies:
        kind = Kind.CONTACT_REPLY
    reply = {"from": contact, "in_reply_to": thread["internet_message_id"], "subject": f"RE: Soak {tag}"}
    if kind is Kind.CONTACT_REPLY:
        files = [{"kind": "file", "name": "note.pdf", "size": SMALL_FILE_BYTES}] if sent.tag % 3 == 0 else []
        made = stack.mail_world(
            "POST", f"mail/{box.address}/deliver", {**reply, "body_text": tag, "attachments": files}
        )
        box.replies[sent.thread] = made["id"]
    elif kind is Kind.OUTLOOK_REPLY:
        spec = {"message_id": box.replies[sent.thread], "body_text": tag, "subject": f"RE: Soak {tag}"}
        stack.mail_world("POST", f"mail/{box.address}/reply", spec)
    elif kind is Kind.OVERSIZE:
        big = [{"kind": "file", "name": "video.mp4", "size": OVERSIZE_BYTES}]
        stack.mail_world("POST", f"mail/{box.address}/deliver", {**reply, "body_text": tag, "attachments": big})
    elif kind is Kind.OUTLOOK_STARTED:
        started = {"to": [contact], "subject": f"Private {tag}", "body_text": tag}
        stack.mail_world("POST", f"mail/{box.address}/send", started)
    else:
        stranger = {"from": f"news-{sent.tag}@elsewhere.example", "subject": f"Newsletter {tag}", "body_text": tag}
        stack.mail_world("POST", f"mail/{box.address}/deliver", stranger)
    return kind


# -- host B ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def second_host(workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Host B: ``python -m devtools.local_host`` with this process's settings (the stack put them in the
    environment), on its own port, sharing Azurite. Its log goes to ``workdir/host-b.log``."""
    log_path = workdir / "host-b.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.local_host", "--port", str(free_port()), "--no-create-storage",
             "--settings", str(workdir / "no-local-settings.json")],
            cwd=ROOT, env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: "queueTrigger on" in log_path.read_text(errors="replace"), "host B to start", 60)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def invocations(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("Executed 'Functions.inbound_worker'")


# -- what was stored ------------------------------------------------------------------------------------------------


def stored_tags(stack: Stack, boxes: list[Mailbox]) -> tuple[Counter[int], dict[int, str]]:
    """Tags of the messages in every thread (rows, fast: for progress) and the skip reasons by tag."""
    store = MessageStore(stack.services.storage.tables, stack.services.storage.blobs)
    found: Counter[int] = Counter()
    skips: dict[int, str] = {}
    for box in boxes:
        for thread in box.threads:
            for m in store.for_thread(thread["thread_id"]):
                found.update(int(t) for t in TAG.findall(m.subject))
        for s in store.skips_for_user(box.user_id):
            skips.update({int(t): s.reason for t in TAG.findall(s.subject)})
    return found, skips


def read_api_tags(stack: Stack, boxes: list[Mailbox]) -> tuple[Counter[int], dict[int, str]]:
    """The same, as Enrollio reads it: ``GET /api/threads/{id}/messages`` and ``GET /api/users/{id}/skips``."""
    found: Counter[int] = Counter()
    skips: dict[int, str] = {}
    for box in boxes:
        for thread in box.threads:
            view = stack.enrollio.call(
                "GET", f"/api/threads/{thread['thread_id']}/messages", params={"user_id": box.user_id}
            )
            view.raise_for_status()
            for m in view.json()["messages"]:
                found.update(int(t) for t in TAG.findall(m["subject"]))
        answer = stack.enrollio.call("GET", f"/api/users/{box.user_id}/skips")
        answer.raise_for_status()
        for s in answer.json()["skips"]:
            skips.update({int(t): s["reason"] for t in TAG.findall(s["subject"])})
    return found, skips


def queues_idle(stack: Stack) -> bool:
    return all(d.messages == 0 for d in queue_depths(stack.services.storage))


def queue_length(stack: Stack, queue: str) -> int:
    """Messages in ``queue``, those hidden included (a killed host's lease, a retry's delay)."""
    return stack.services.storage.queue(queue).get_queue_properties().approximate_message_count or 0


def drained_or_stalled(
    stack: Stack, boxes: list[Mailbox], expected: set[int], delivered: Callable[[float], bool], stall: float
) -> Callable[[], tuple[bool, str]]:
    """Done when every notification was delivered and the queues are empty, or when nothing more has been stored
    for ``stall`` seconds: what is left is held by the killed host's lease or waits for a retry, or its
    notification was lost; the catch-up's turn."""
    last = {"stored": -1, "since": time.monotonic()}

    def check() -> tuple[bool, str]:
        found, _ = stored_tags(stack, boxes)
        have = len(expected & set(found))
        now = time.monotonic()
        if have != last["stored"]:
            last.update(stored=have, since=now)
        idle = delivered(0) and queues_idle(stack)
        stalled = now - last["since"] >= stall
        state = "empty" if idle else f"{queue_length(stack, names.QUEUE_INBOUND)} inbound messages held or queued"
        return idle or stalled, f"{have}/{len(expected)} stored, queues {state}"

    return check


def stored_anywhere(stack: Stack) -> Counter[int]:
    """Tags of every message row in storage, whatever its thread or user: a message stored in a second thread (or
    for a second user) is a duplicate the threads' own views would not show."""
    table = stack.services.storage.tables.get_table_client(names.TABLE_MESSAGES)
    found: Counter[int] = Counter()
    for row in table.list_entities(select=["Subject"]):
        found.update(int(t) for t in TAG.findall(str(row.get("Subject", ""))))
    return found


def message_gets(paths: list[str]) -> Counter[str]:
    """``GET /users/{id}/messages/{id}`` per message id (not its attachments, value or the delta)."""
    return Counter(m.group(1) for p in paths if (m := MESSAGE_GET.match(p)) and m.group(1) != "delta")


def judge(
    report: Report,
    sent: dict[int, Kind],
    found: Counter[int],
    skips: dict[int, str],
    anywhere: Counter[int] | None = None,
) -> None:
    """``found``: the copies Enrollio's read API shows in the threads; ``anywhere``: the rows in storage."""
    report.expected = sum(k in STORED_KINDS for k in sent.values())
    report.oversize = sum(k is Kind.OVERSIZE for k in sent.values())
    for tag, kind in sorted(sent.items()):
        copies = max(found.get(tag, 0), (anywhere or Counter()).get(tag, 0))
        if kind in STORED_KINDS:
            if copies == 1:
                report.stored_once += 1
            elif copies == 0:
                report.missing.append(tag)
            else:
                report.duplicated.append(tag)
        elif copies:
            report.wrongly_stored.append(f"[soak-{tag}] {kind} stored {copies}x")
        if kind is Kind.OVERSIZE:
            if skips.get(tag) == "attachment_too_large":
                report.skipped_right += 1
            else:
                report.wrongly_stored.append(f"[soak-{tag}] {kind}: skip reason {skips.get(tag)!r}")
    report.by_kind = Counter(str(k) for k in sent.values())


def progress_until(
    check: Callable[[], tuple[bool, str]], what: str, timeout: float, every: float = 3.0
) -> float | None:
    """Poll ``check`` (done, a progress line) until done, printing the line every ``every`` seconds; the seconds
    it took, or None when ``timeout`` ran out."""
    started = time.monotonic()
    last = 0.0
    while True:
        done, line = check()
        now = time.monotonic()
        if done:
            say(f"   {what}: {line}")
            return now - started
        if now - started > timeout:
            say(f"   {what}: gave up after {timeout:.0f} s: {line}")
            return None
        if now - last >= every:
            say(f"   {what}: {line}")
            last = now
        time.sleep(0.5)


def run_soak(options: SoakOptions, azurite: Azurite | None = None) -> Report:
    """The whole soak (see the module's docstring); the report, whatever it found."""
    report = Report()
    sent_kinds: dict[int, Kind] = {}
    with contextlib.ExitStack() as running:
        workdir = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        if azurite is None:
            azurite = running.enter_context(Azurite())
        say("starting Azurite, the Graph emulator and local host A; host B as a subprocess...")
        stack = running.enter_context(offline_stack(azurite, workdir, GRAPH_RETRY_BUDGET_SECONDS="10"))
        for timer in stack.host.timers:
            timer.stop()  # the catch-up runs when the soak says (step 4), not on the quarter-hour
        host_b = running.enter_context(second_host(workdir))
        say(f"   host A {stack.enrollio.base_url} (pid {os.getpid()}), host B pid {host_b.pid}")
        say(f"connecting {options.mailboxes} mailboxes...")
        boxes = connect_all(stack, options.mailboxes)
        stack.settle(timeout=60)
        stack.emulator.log.clear()
        notifier = stack.emulator.subscriptions.notifier
        faults = {
            "concurrency": 4,
            "latency_ms": options.latency_ms,
            "rate_limit": options.rate_limit,
            "rate_window_seconds": RATE_WINDOW_SECONDS,
            "fail_503_rate": options.fail_503_rate,
            "retry_after_seconds": 1.0,
            "seed": options.seed,
            # A few 429s whatever the machine's speed (the rate limit's depend on how fast the mail arrives).
            "fail_paths": {"/messages/": {"status": 429, "after": SCRIPTED_429_AFTER, "times": SCRIPTED_429S}},
        }
        stack.emulator.faults.configure(**faults)
        notifier.set_faults(
            DeliveryFaults(options.drop_rate, options.duplicate_rate, options.reorder_rate, seed=options.seed)
        )
        say(
            f"faults on: Graph 429 past {options.rate_limit} requests/{RATE_WINDOW_SECONDS:g} s per mailbox and past 4 "
            f"concurrent, {SCRIPTED_429S} more after the {SCRIPTED_429_AFTER}th message request, 503 for "
            f"{options.fail_503_rate:.0%} (Retry-After 1 s), +{options.latency_ms} ms; "
            f"notifications dropped {options.drop_rate:.0%}, duplicated {options.duplicate_rate:.0%}, "
            f"reordered {options.reorder_rate:.0%}"
        )
        arriving = plan(options)
        say(f"{len(arriving)} messages arrive across {options.mailboxes} mailboxes...")
        arrivals = Arrivals(len(arriving), int(len(arriving) * options.kill_at))

        def arrive(items: list[Sent]) -> None:
            for item in items:
                if arrivals.count(item.tag, deliver(stack, boxes[item.mailbox], item)):
                    # Killed once it has done work (under load it may not have taken a message yet at this point):
                    # the kill must cost something for the run to show it loses nothing.
                    deadline = time.monotonic() + KILL_WAIT_SECONDS
                    while invocations(workdir / "host-b.log") == 0 and time.monotonic() < deadline:
                        time.sleep(0.2)
                    report.killed_after = invocations(workdir / "host-b.log")
                    host_b.send_signal(signal.SIGKILL)
                    host_b.wait()
                    say(
                        f"   {arrivals.kill_at} arrived: killed host B (SIGKILL) after {report.killed_after} inbound "
                        "invocations finished there"
                    )

        # Each sender takes whole mailboxes, so a mailbox's mail arrives in the planned order.
        senders = [[i for i in arriving if i.mailbox % options.senders == k] for k in range(options.senders)]
        with ThreadPoolExecutor(options.senders, thread_name_prefix="soak-sender") as pool:
            running_senders = [pool.submit(arrive, share) for share in senders]
            while not all(f.done() for f in running_senders):
                time.sleep(PROGRESS_SECONDS)
                found, _ = stored_tags(stack, boxes)
                say(f"   {len(arrivals.kinds)}/{len(arriving)} arrived; {len(found)} stored so far")
            for f in running_senders:
                f.result()  # a sender's failure fails the soak
        sent_kinds.update(arrivals.kinds)
        last_arrival = time.monotonic()
        expected = {t for t, k in sent_kinds.items() if k in STORED_KINDS}

        say("waiting for the notifications and the queues (until nothing more is stored for a while)...")
        progress_until(
            drained_or_stalled(stack, boxes, expected, notifier.flush, options.stall_seconds),
            "push",
            options.converge_timeout,
        )
        found, _ = stored_tags(stack, boxes)
        report.push_stored = sum(1 for t in expected if found.get(t) == 1)
        notifier.set_faults(DeliveryFaults())
        if options.catch_up:
            # The timer's run once every connection is due (2 h at most), its requests not spread over the quarter.
            due = stack.services.clock.now() + MAX_INTERVAL
            requested = schedule_catchups(stack.services, spread=dt.timedelta(0), tick=due)
            say(f"catch-up: requested for {requested} connections (the timer's run once all are due)")

            def converged() -> tuple[bool, str]:
                found, _ = stored_tags(stack, boxes)
                have = len(expected & set(found))
                idle = queue_length(stack, names.QUEUE_CATCHUP) == 0
                return have == len(expected) and idle, f"{have}/{len(expected)} stored"

            progress_until(converged, "catch-up", options.converge_timeout)
        found, _ = stored_tags(stack, boxes)
        if expected <= set(found):
            report.converge_seconds = time.monotonic() - last_arrival
        report.held_back = queue_length(stack, names.QUEUE_INBOUND)
        if options.drain and report.held_back:
            say(
                f"draining: {report.held_back} inbound queue messages are still held (the killed host's 10-minute "
                "lease, retries after a delay); waiting for them, so that their redelivery is judged too..."
            )
            progress_until(
                lambda: (queues_idle(stack), f"{queue_length(stack, names.QUEUE_INBOUND)} held"),
                "drain",
                LEASE_WAIT_SECONDS,
                every=30.0,
            )
        stack.emulator.faults.reset()
        say("reading every thread and skip through Enrollio's read API...")
        found, skips = read_api_tags(stack, boxes)
        judge(report, sent_kinds, found, skips, stored_anywhere(stack))
        depths = queue_depths(stack.services.storage)
        failures = recent_failures(stack.services.storage, limit=1000)
        report.poison = sum(d.poison for d in depths) + len(failures)
        report.failures = [f"{f.queue}: {f.error[:120]}" for f in failures[:5]]
        entries = [e for e in stack.emulator.log.snapshot() if e.path.startswith("/v1.0/")]
        report.graph_requests = len(entries)
        report.throttled = sum(e.status == 429 for e in entries)
        report.unavailable = sum(e.status == 503 for e in entries)
        report.message_gets = message_gets([e.path for e in entries if e.method == "GET"])
        report.notifications_dropped = len(notifier.dropped)
    return report


def print_report(report: Report, options: SoakOptions) -> None:
    mix = ", ".join(f"{k} {report.by_kind.get(str(k), 0)}" for k in Kind)
    converge = "did not converge" if report.converge_seconds is None else f"{report.converge_seconds:.1f} s"
    drained = options.drain and report.held_back > 0
    rows = [
        ("messages arrived", f"{sum(report.by_kind.values())} ({mix})"),
        ("expected stored exactly once", f"{report.expected}"),
        ("stored exactly once", f"{report.stored_once} (by push alone, before the catch-up: {report.push_stored})"),
        ("missing", _listed(report.missing)),
        ("duplicated", _listed(report.duplicated)),
        ("wrongly stored", str(len(report.wrongly_stored)) + _tail(report.wrongly_stored)),
        ("over-cap replies skipped with their reason", f"{report.skipped_right}/{report.oversize}"),
        ("poison (poison queues + Failures rows)", str(report.poison) + _tail(report.failures)),
        ("Graph requests / 429s / 503s", f"{report.graph_requests} / {report.throttled} / {report.unavailable}"),
        ("GETs per message fetched", _gets(report.message_gets)),
        ("notifications dropped by the fault", str(report.notifications_dropped)),
        ("host B killed after", f"{report.killed_after} inbound invocations"),
        ("time to converge after the last arrival", converge),
        ("queue messages still held then", f"{report.held_back}{' (drained and judged above)' if drained else ''}"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print()
    print(("PASS" if report.ok else "FAIL") + f": {options.mailboxes} mailboxes, seed {options.seed}")


def _gets(gets: Counter[str]) -> str:
    """Mean and most GETs per message, and how many were fetched more than once (retries after a 429 or 503,
    duplicated notifications, the killed host's messages redelivered)."""
    if not gets:
        return "none"
    again = sum(1 for n in gets.values() if n > 1)
    return (
        f"{sum(gets.values()) / len(gets):.2f} on average over {len(gets)} messages, at most {max(gets.values())}; "
        f"{again} fetched more than once"
    )


def _listed(tags: list[int]) -> str:
    return str(len(tags)) + (f" ({', '.join(f'[soak-{t}]' for t in tags[:10])})" if tags else "")


def _tail(items: list[str]) -> str:
    return ("\n    " + "\n    ".join(items[:5])) if items else ""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SoakOptions()
    parser.add_argument("--mailboxes", type=int, default=defaults.mailboxes, help="connected mailboxes (users)")
    parser.add_argument("--messages", type=int, default=defaults.messages, help="messages that arrive, all kinds")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the mail's mix and order, and the faults")
    parser.add_argument("--senders", type=int, default=defaults.senders, help="threads the mail arrives from")
    parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms, help="added to each Graph request")
    parser.add_argument(
        "--rate-limit", type=int, default=defaults.rate_limit, help="Graph requests per mailbox per 5 s"
    )
    parser.add_argument(
        "--no-catch-up", action="store_true", help="skip step 4: what push alone delivers (mail of dropped "
        "notifications is then missing, and the soak fails)"
    )  # fmt: skip
    parser.add_argument(
        "--no-drain", action="store_true", help="judge at convergence, without waiting up to 15 minutes for the killed "
        "host's leased queue messages to come back (their redelivery is then not judged)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    options = SoakOptions(
        mailboxes=args.mailboxes,
        messages=args.messages,
        seed=args.seed,
        senders=args.senders,
        latency_ms=args.latency_ms,
        rate_limit=args.rate_limit,
        catch_up=not args.no_catch_up,
        drain=not args.no_drain,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: Azurite and host B go too
    logging.basicConfig(level=logging.ERROR)
    for name in ("werkzeug", "devtools.local_host", "azure", "sync_core"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        report = run_soak(options)
    except KeyboardInterrupt:
        say("interrupted: everything it started is stopped")
        raise SystemExit(130) from None
    print_report(report, options)
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
