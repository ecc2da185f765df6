"""Graph's per-mailbox limits kept across instances (issue 11, item 3; CONTRACT.md section 8: 4 concurrent requests
per app and mailbox, and a 429's ``Retry-After`` is waited out): two processes syncing one mailbox's mail never
have more than 4 requests in flight at Graph, and a message Graph keeps throttling goes back to the queue without
counting a try, so it never reaches the Failures table or the poison queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.azurite import Azurite
from devtools.emulator.notifier import DeliveryFaults
from devtools.stack import Stack, offline_stack
from sync_core import names, workers
from sync_core.adapters.ops_store import FailureStore
from sync_core.adapters.storage import utc
from sync_core.catchup_queue import request_catchup
from sync_core.clock import SystemClock
from sync_core.services import Services
from tests.integration.conftest import wait_until
from tests.integration.test_inbound import CONTACT, start_thread, thread

BUDGET_SECONDS = 1.0  # Graph's retry budget per call here: a Retry-After past it sends the reference back
PRODUCTION_BUDGET = 20.0  # the default: a reference waits for a slot of its mailbox rather than going back
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with offline_stack(
        azurite, tmp_path_factory.mktemp("limits"), GRAPH_RETRY_BUDGET_SECONDS=str(BUDGET_SECONDS)
    ) as running:
        for timer in running.host.timers:  # a scheduled catch-up would sync what the test holds back
            timer.stop()
        yield running


def replies_without_notifications(stack: Stack, mailbox: str, sent: dict[str, Any], count: int) -> list[Any]:
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {"from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"]}
        return [
            stack.mail_world("POST", f"mail/{mailbox}/deliver", {**spec, "body_text": f"#{i}"}) for i in range(count)
        ]
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())


def sync_in_another_process() -> subprocess.Popen[str]:
    """The inbound worker of a second instance: its own process, its own gate, the same storage (the stack's
    settings are in the environment)."""
    code = (
        "import sys\n"
        "from sync_core import workers\n"
        "from sync_core.services import default_services\n"
        "services = default_services()\n"
        "services.storage.tables\n"
        "print('ready', flush=True)\n"
        "print(workers.run_inbound(sys.stdin.read(), services))\n"
        "services.mailbox_gate.release_all()\n"  # else its slots stay leased until their leases end
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "GRAPH_RETRY_BUDGET_SECONDS": str(PRODUCTION_BUDGET)},
    )
    return process


def test_two_instances_syncing_one_mailbox_never_have_more_than_four_requests_at_graph(
    stack: Stack, user_id: str
) -> None:
    """Each instance alone would keep its own 4: together they must keep Graph's 4 (section 8). The emulator
    counts the requests in flight per app and mailbox (no limit set, so it counts what is sent)."""
    mailbox = stack.new_mailbox("two.hosts")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    replies = replies_without_notifications(stack, mailbox, sent, 48)
    [connection] = stack.services.connections.for_user(user_id)
    refs = [{"user_id": user_id, "connection_id": connection.connection_id, "message_id": r["id"]} for r in replies]
    stack.emulator.faults.configure(latency_ms=150)
    try:
        other = sync_in_another_process()
        assert other.stdin is not None and other.stdout is not None and other.stderr is not None
        assert other.stdout.readline().strip() == "ready"  # both start syncing at once
        settings = stack.settings.model_copy(update={"graph_retry_budget_seconds": PRODUCTION_BUDGET})
        services = Services(settings, SystemClock())
        here = threading.Thread(target=workers.sync_pack, args=(json.dumps({"refs": refs[:24]}), services))
        here.start()
        other.stdin.write(json.dumps({"refs": refs[24:]}))
        other.stdin.close()
        out = other.stdout.read()
        assert other.wait(120) == 0, other.stderr.read()[-2000:]
        here.join(120)
        services.mailbox_gate.release_all()
        stored = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
        mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
        peak = stack.emulator.faults.peak_in_flight(stack.settings.graph_client_id, mailbox_id)
    finally:
        stack.emulator.faults.reset()
    assert peak == 4, f"{peak} requests in flight at once (the second instance said: {out.strip()[:300]})"
    assert sorted(stored[1:]) == sorted(r["internetMessageId"] for r in replies)


def test_a_message_graph_keeps_throttling_never_reaches_poison_and_syncs_once_graph_lets_it(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph throttles the GET of one reply six times, more than the five tries a queue message gets, each time
    with a Retry-After past the call's budget: the inbound worker sends it back to wait, never counting a try; the
    reply syncs once Graph lets it, and nothing lands in the Failures table or the poison queue."""
    monkeypatch.setattr(workers, "THROTTLE_JITTER_SECONDS", 0.2)
    mailbox = stack.new_mailbox("throttled")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    since = stack.services.clock.now()
    throttled = 6
    stack.emulator.faults.configure(retry_after_seconds=1.2)
    try:
        replies = replies_without_notifications(stack, mailbox, sent, 1)
        [connection] = stack.services.connections.for_user(user_id)
        stack.emulator.faults.configure(fail_paths={replies[0]["id"]: {"status": 429, "times": throttled}})
        ref = {"user_id": user_id, "connection_id": connection.connection_id, "message_id": replies[0]["id"]}
        stack.services.storage.queue(names.QUEUE_INBOUND).send_message(json.dumps({"refs": [ref]}))

        def synced() -> list[Any] | None:
            messages = thread(stack, user_id, sent["thread_id"])["messages"]
            return messages if len(messages) == 2 else None

        messages = wait_until(synced, what="the throttled reply stored", timeout=90)
    finally:
        stack.emulator.faults.reset()
    assert messages[1]["internet_message_id"] == replies[0]["internetMessageId"]
    refused = [e for e in stack.emulator.log.snapshot() if replies[0]["id"] in e.path and e.status == 429]
    assert len(refused) == throttled > workers.MAX_ATTEMPTS
    failures = FailureStore(stack.services.storage.tables).recent(names.QUEUE_INBOUND, limit=200)
    assert [f for f in failures if replies[0]["id"] in str(f["message"]) and utc(f["at"]) >= since] == []
    poison = stack.services.storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX)
    assert [m for m in poison.peek_messages(max_messages=32) if replies[0]["id"] in m.content] == []


def test_a_catchup_graph_keeps_throttling_never_reaches_poison_and_completes_once_graph_lets_it(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph throttles the catch-up's delta round six times, more than the five tries a queue message gets, each
    time with a Retry-After past the call's budget: the catch-up worker sends its request back to wait, never
    counting a try, and the run completes once Graph lets it: the reply no notification brought is stored, and
    nothing lands in the Failures table or the catch-up poison queue."""
    monkeypatch.setattr(workers, "THROTTLE_JITTER_SECONDS", 0.2)
    mailbox = stack.new_mailbox("catchup.throttled")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    since = stack.services.clock.now()
    throttled = 6
    stack.emulator.faults.configure(retry_after_seconds=1.2)
    try:
        replies = replies_without_notifications(stack, mailbox, sent, 1)
        [connection] = stack.services.connections.for_user(user_id)
        mailbox_id = stack.world.mailbox(mailbox).id  # type: ignore[union-attr]
        delta = f"{mailbox_id}/mailFolders/inbox/messages/delta"
        stack.emulator.faults.configure(fail_paths={delta: {"status": 429, "times": throttled}})
        request_catchup(connection, "test", stack.services)

        def synced() -> list[Any] | None:
            messages = thread(stack, user_id, sent["thread_id"])["messages"]
            return messages if len(messages) == 2 else None

        messages = wait_until(synced, what="the reply the throttled catch-up recovers", timeout=90)
    finally:
        stack.emulator.faults.reset()
    assert messages[1]["internet_message_id"] == replies[0]["internetMessageId"]
    refused = [e for e in stack.emulator.log.snapshot() if "/messages/delta" in e.path and e.status == 429]
    assert len([e for e in refused if mailbox_id in e.path]) == throttled > workers.MAX_ATTEMPTS
    failures = FailureStore(stack.services.storage.tables).recent(names.QUEUE_CATCHUP, limit=200)
    assert [f for f in failures if connection.connection_id in str(f["message"]) and utc(f["at"]) >= since] == []
    poison = stack.services.storage.queue(names.QUEUE_CATCHUP + names.POISON_SUFFIX)
    assert [m for m in poison.peek_messages(max_messages=32) if connection.connection_id in m.content] == []


def test_a_pack_naming_one_message_twice_fetches_it_once_and_stores_it_once(stack: Stack, user_id: str) -> None:
    """A notification batch may carry a message twice (created and updated): the pack's threads must not sync it
    side by side (two GETs, and the loser's cleanup deleting blobs by the winner's names)."""
    mailbox = stack.new_mailbox("twice")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    replies = replies_without_notifications(stack, mailbox, sent, 1)
    [connection] = stack.services.connections.for_user(user_id)
    ref = {"user_id": user_id, "connection_id": connection.connection_id, "message_id": replies[0]["id"]}
    updated = {**ref, "change_type": "updated"}
    mark = len(stack.emulator.log.snapshot())
    report = workers.sync_pack(json.dumps({"refs": [ref, updated, ref]}), stack.services)
    gets = [e for e in stack.emulator.log.snapshot()[mark:] if e.method == "GET" and replies[0]["id"] in e.path]
    stored = [m["internet_message_id"] for m in thread(stack, user_id, sent["thread_id"])["messages"]]
    assert stored[1:] == [replies[0]["internetMessageId"]], str(report)
    assert len([e for e in gets if "/attachments" not in e.path and "$value" not in e.path]) == 1, str(report)
