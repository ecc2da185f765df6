"""The queue workers' policy, one use case per queue: what to retry, what to record, what to tell the user.

Every worker speaks the vocabulary of ``sync_core.failures``:

- ``Malformed`` and ``Permanent``: recorded in the Failures table at once; the queue message is done.
- ``Transient``: the error is noted against the message and raised, so the host retries it after its
  visibility timeout and, past ``maxDequeueCount``, moves it to ``<queue>-poison`` (``record_poison``).
- ``Transient`` because Graph throttled the mailbox (``throttled``), at the catch-up worker: the request goes back
  to its queue, visible once the wait is over, and the try ends well: waiting out a throttle is not a try, so a
  throttled mailbox never poisons its catch-up (the run goes on from the cursors it saved per page).

The inbound queue carries packs of message references, and one reference must not cost the others: each is
synced on its own; a permanent failure records that reference only, and the references that failed
transiently go back to the queue as a smaller pack, after a delay, with an attempt count that ends in the
Failures table like the host's poison queue would.

A pack's references are synced ``PACK_CONCURRENCY`` at a time: the mailbox gate (``adapters/mailbox_gate``)
keeps 4 of a mailbox's requests in flight across every instance, and the other threads store what came back
meanwhile, so a burst of one mailbox runs at Graph's ceiling instead of one request at a time. Throttling is not a
failure of the reference: one Graph throttled (a 429 whose wait outlasts the call's budget, or every slot of its
mailbox busy) goes back to the queue after the wait with its attempt count unchanged, so a throttled mailbox never
fills the Failures table or the poison queue (a reference carries when it was first throttled: one still throttled
a day later is recorded there after all, for operators); once one reference of a mailbox is throttled, the pack's
other references of it go back untried with it, each mailbox's after its own wait. References not started after
``PACK_BUDGET_SECONDS`` go back untried too, so a pack always ends within the function's timeout.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sync_core import catchup, delivery, names, upkeep
from sync_core.adapters.mailbox_gate import MAX_CONCURRENT_PER_MAILBOX
from sync_core.adapters.ops_store import MAX_TEXT, FailureStore
from sync_core.failures import Failure, Malformed, Transient, classify, malformed, parse_json, record
from sync_core.inbound import MessageRef, Result, sync_message
from sync_core.services import Services
from sync_core.table_limits import utf16_units
from sync_core.webhook import pack

log = logging.getLogger(__name__)
_random = random.SystemRandom()  # jitter, not secrets; SystemRandom keeps bandit quiet

# As many tries as host.json's maxDequeueCount gives any other queue message (checked by a test).
MAX_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 10  # host.json's visibilityTimeout: the first retry's delay, doubled per attempt
MAX_RETRY_DELAY_SECONDS = 300
# Twice Graph's in-flight limit per mailbox: while 4 requests are at Graph, the other threads store their answers.
PACK_CONCURRENCY = 2 * MAX_CONCURRENT_PER_MAILBOX
PACK_BUDGET_SECONDS = 120.0  # host.json's functionTimeout is 5 minutes; a started reference may take a call's budget
BUSY_RETRY_SECONDS = 2.0  # a throttled item whose wait Graph did not say comes back after this
THROTTLED_REPORT_SECONDS = 24 * 3600  # a reference Graph throttled for this long is recorded, not re-queued
THROTTLE_JITTER_SECONDS = 2.0  # spread the return of a throttled mailbox's references over this


def _run(
    queue: str, body: str, services: Services, handle: Callable[[str], object], requeue_throttled: bool = False
) -> str:
    try:
        outcome = handle(body)
    except Exception as exc:
        failure = classify(exc)
        if requeue_throttled and isinstance(failure, Transient) and failure.throttled:
            return _wait_out_throttle(queue, body, failure, services)
        if isinstance(failure, Transient):
            FailureStore(services.storage.tables).note_error(queue, body, failure.describe(), services.clock.now())
            raise
        record(queue, body, failure, services)
        return failure.describe()
    return str(outcome)


def _wait_out_throttle(queue: str, body: str, failure: Transient, services: Services) -> str:
    """Graph throttled the mailbox: the message goes back to its queue as it is, visible once the wait is over, and
    this try ends well, so the host never counts it toward poison (the item did nothing wrong)."""
    delay = (failure.retry_after or BUSY_RETRY_SECONDS) + _random.random() * THROTTLE_JITTER_SECONDS
    services.storage.queue(queue).send_message(body, visibility_timeout=max(1, math.ceil(delay)), time_to_live=-1)
    return f"throttled, re-queued in {math.ceil(delay)}s (not counted as a try): {failure}"


def run_lifecycle(body: str, services: Services) -> str:
    """The ``lifecycle-events`` worker: renew, re-create or catch up as the event asks."""
    return _run(names.QUEUE_LIFECYCLE, body, services, lambda raw: _lifecycle_event(raw, services))


def _lifecycle_event(raw: str, services: Services) -> object:
    """One lifecycle event. A transient failure sends the event back to the queue after Graph's ``Retry-After``
    (or a growing back-off), as an inbound pack is, rather than leaving it to the host's retries every 10 s, which
    a Graph outage of a minute would turn into poison; a throttled try does not count. After ``MAX_ATTEMPTS`` a
    ``renew`` is dropped: the next hourly renewal run queues it again while the subscription is in its renewal
    window (a day). Any other event is then recorded in Failures, for ``replay-poison``."""
    try:
        return upkeep.handle_lifecycle(raw, services)
    except Exception as exc:
        failure = classify(exc)
        if not isinstance(failure, Transient):
            raise
        event = upkeep.parse_lifecycle(raw)
        attempt = event.attempt if failure.throttled else event.attempt + 1
        what = f"{event.event} of subscription {event.subscription_id}"
        if attempt >= MAX_ATTEMPTS:
            if event.event == upkeep.RENEW:
                log.warning("%s failed %d times (%s); the next renewal run queues it again", what, attempt, failure)
                return f"{what}: {failure.describe()}; dropped after {attempt} tries, for the next renewal run"
            given_up = Transient(f"gave up after {MAX_ATTEMPTS} attempts: {failure}")
            fresh = event.model_copy(update={"attempt": 0}).model_dump_json()  # a replay gets its tries afresh
            return record(names.QUEUE_LIFECYCLE, fresh, given_up, services)
        delay = (failure.retry_after or 0.0) if failure.throttled else retry_delay(event.attempt, failure.retry_after)
        again = event.model_copy(update={"attempt": attempt}).model_dump_json()
        services.storage.queue(names.QUEUE_LIFECYCLE).send_message(again, visibility_timeout=max(1, math.ceil(delay)))
        return f"{what}: {failure.describe()}; again in {math.ceil(delay)}s"


def run_catchup(body: str, services: Services) -> str:
    """The ``catchup-requests`` worker: one delta catch-up run for a connection."""
    # A run Graph throttles stops where its cursors are (saved per page) and goes on from there after the wait.
    return _run(
        names.QUEUE_CATCHUP,
        body,
        services,
        lambda raw: catchup.catch_up(catchup.parse_request(raw), services),
        requeue_throttled=True,
    )


def run_events(body: str, services: Services) -> str:
    """The ``enrollio-events`` worker: one delivery attempt (``delivery`` retries Enrollio's failures itself)."""
    return _run(names.QUEUE_EVENTS, body, services, lambda raw: delivery.deliver(raw, services))


def record_poison(queue: str, body: str, services: Services) -> str:
    """A message the host gave up on (``<queue>-poison``): recorded with the last error its worker noted.

    An inbound pack longer than a table property holds (the webhook packs up to 40 KiB) is recorded as several
    rows, each a pack of whole references, so ``replay-poison`` can send every reference back."""
    store = FailureStore(services.storage.tables)
    now = services.clock.now()
    parts = _recordable_parts(body) if queue == names.QUEUE_INBOUND else [body]
    error = store.last_error(queue, body) if len(parts) > 1 else None
    rows = [store.record(queue, part, now, error) for part in parts]
    log.error("a message of %s failed every retry; recorded as failure %s", queue, ", ".join(rows))
    return rows[0]


def _recordable_parts(body: str) -> list[str]:
    """The pack as it came when it fits a Failures row, else its references re-packed to fit (text cut else)."""
    if utf16_units(body) <= MAX_TEXT:
        return [body]
    try:
        refs, _ = _parse_pack(body)
    except Malformed:
        return [body]  # not a pack: recorded cut, and kept by a replay as such
    # The pack's envelope is 12 characters; JSON text is ASCII (json.dumps escapes the rest), one unit each.
    return pack(refs, limit=MAX_TEXT - 64) if refs else [body]


# -- the inbound pack ------------------------------------------------------------------------------------------


@dataclass
class PackReport:
    """What became of each reference of one pack."""

    outcomes: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # permanent or malformed: in the Failures table
    retried: int = 0  # re-queued after a transient failure
    retry_after: float = 0.0
    throttled: int = 0  # re-queued after Graph throttled them (or untried when the pack's time ran out): not a try
    throttled_for: float = 0.0

    def __str__(self) -> str:
        parts = [*self.outcomes, *(f"failed: {r}" for r in self.recorded)]
        if self.retried:
            parts.append(f"{self.retried} re-queued in {self.retry_after:.0f}s")
        if self.throttled:
            parts.append(f"{self.throttled} throttled, re-queued in {self.throttled_for:.0f}s (not counted as a try)")
        return "; ".join(parts)


def _parse_pack(body: str) -> tuple[list[Any], int]:
    data = parse_json(body, "inbound pack")
    if not isinstance(data, dict) or not isinstance(data.get("refs"), list):
        raise Malformed('inbound pack: expected {"refs": [...]}')
    attempt = data.get("attempt", 0)
    return data["refs"], attempt if isinstance(attempt, int) and attempt >= 0 else 0


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before a re-queued pack is visible: Graph's ``Retry-After`` when it gave one, else back-off."""
    backoff = min(MAX_RETRY_DELAY_SECONDS, RETRY_DELAY_SECONDS * 2**attempt)
    return max(retry_after or 0.0, float(backoff))


class _Waiting:
    """A reference that waits for its mailbox's throttle to pass (or was not started in the pack's time)."""

    def __init__(self, retry_after: float, throttled: bool = True) -> None:
        self.retry_after = retry_after
        self.throttled = throttled  # False: only not started in the pack's time


class _PackRun:
    """The references of one pack synced concurrently; a mailbox Graph throttles is held back for the rest."""

    def __init__(self, services: Services, budget: float) -> None:
        self.services = services
        self.deadline = time.monotonic() + budget
        self.held_back: dict[str, float] = {}  # mailbox -> how long Graph asked to wait
        self.lock = threading.Lock()

    def sync(self, ref: MessageRef) -> Result | Failure | _Waiting:
        mailbox = _mailbox_of(ref)
        with self.lock:
            if mailbox in self.held_back:
                return _Waiting(self.held_back[mailbox])
        if time.monotonic() > self.deadline:
            return _Waiting(0.0, throttled=False)
        try:
            return sync_message(ref, self.services)
        except Exception as exc:
            failure = classify(exc)
            if isinstance(failure, Transient) and failure.throttled:
                with self.lock:
                    self.held_back[mailbox] = max(self.held_back.get(mailbox, 0.0), failure.retry_after or 0.0)
            return failure


def _mailbox_of(ref: MessageRef) -> str:
    """Whose limit a reference counts against: a notification's names its mailbox; an older or catch-up one, its
    connection (which stands for its mailbox)."""
    return ref.mailbox or f"connection:{ref.connection_id}"


def sync_pack(body: str, services: Services, budget: float = PACK_BUDGET_SECONDS) -> PackReport:
    """Sync every message a pack references; see the module docstring for what happens to failures."""
    refs, attempt = _parse_pack(body)
    report = PackReport()
    retry: list[dict[str, Any]] = []
    waiting: dict[str, tuple[list[dict[str, Any]], float]] = {}  # mailbox -> its references, the longest wait
    given_up: list[tuple[object, Failure]] = []
    last: Transient | None = None
    wait = 0.0  # the longest Retry-After Graph asked for: honoured for the whole remainder

    valid: list[MessageRef] = []
    raws: list[Any] = []
    seen: set[tuple[str, str, str, str]] = set()
    for raw in refs:
        try:
            ref = MessageRef.model_validate(raw)
        except ValidationError as exc:
            given_up.append((raw, malformed(exc, "message reference")))
            continue
        # Graph may notify a message twice in one batch (created, updated): two threads syncing it at once would
        # fetch it twice, and the one that lost the race could delete what the other stored under the same names.
        key = (ref.mailbox, ref.user_id, ref.connection_id, ref.message_id)
        if key in seen:
            report.outcomes.append(f"{ref.message_id[-12:]}: duplicate reference, synced once")
            continue
        seen.add(key)
        valid.append(ref)
        raws.append(raw)
    run = _PackRun(services, budget)
    with ThreadPoolExecutor(max_workers=max(1, min(len(valid), PACK_CONCURRENCY))) as pool:
        results = list(pool.map(run.sync, valid))

    for ref, raw, result in zip(valid, raws, results, strict=True):
        if isinstance(result, _Waiting) or (isinstance(result, Transient) and result.throttled):
            now = services.clock.now().timestamp()
            if result.throttled and ref.throttled_since and now - ref.throttled_since >= THROTTLED_REPORT_SECONDS:
                # A day of throttling is no passing wait: operators see it (a Failures row replay-poison resends).
                hours = (now - ref.throttled_since) / 3600
                fresh = {k: v for k, v in raw.items() if k != "throttled_since"}  # a replay waits a day again
                given_up.append((fresh, Transient(f"Graph kept throttling its mailbox for {hours:.0f} hours")))
                continue
            if result.throttled and not ref.throttled_since:
                ref = ref.model_copy(update={"throttled_since": now})
            # Each mailbox's references wait its own throttle, not the longest of the pack.
            refs_of, longest = waiting.get(_mailbox_of(ref), ([], 0.0))
            waiting[_mailbox_of(ref)] = ([*refs_of, ref.model_dump()], max(longest, result.retry_after or 0.0))
        elif isinstance(result, Transient):
            retry.append(ref.model_dump())
            last, wait = result, max(wait, result.retry_after or 0.0)
        elif isinstance(result, Failure):
            given_up.append((raw, result))
        else:
            report.outcomes.append(f"{ref.message_id[-12:]}: {result.outcome} {result.detail}".strip())

    # Re-queue before recording anything: if this fails, the host retries the whole pack, and nothing was
    # recorded twice.
    queue = services.storage.queue(names.QUEUE_INBOUND)
    for held, longest in waiting.values():
        delay = longest + _random.random() * THROTTLE_JITTER_SECONDS
        report.throttled += len(held)
        report.throttled_for = max(report.throttled_for, delay)
        for message in pack(held, attempt=attempt):
            queue.send_message(message, visibility_timeout=max(1, math.ceil(delay)))
    if retry and last is not None:
        if attempt + 1 >= MAX_ATTEMPTS:
            given_up.extend((r, Transient(f"gave up after {MAX_ATTEMPTS} attempts: {last}")) for r in retry)
        else:
            report.retried, report.retry_after = len(retry), retry_delay(attempt, wait)
            for message in pack(retry, attempt=attempt + 1):
                queue.send_message(message, visibility_timeout=math.ceil(report.retry_after))
    for raw, failure in given_up:
        record(names.QUEUE_INBOUND, json.dumps(raw), failure, services)
        report.recorded.append(failure.describe())
    return report


def run_inbound(body: str, services: Services) -> str:
    """The ``inbound-messages`` worker."""
    return _run(names.QUEUE_INBOUND, body, services, lambda raw: sync_pack(raw, services))
