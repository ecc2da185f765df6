"""``replay-poison QUEUE``: after a fix, send what the service gave up on back to its queue.

What was given up on lives in two places. The host moves a message that failed ``maxDequeueCount`` times to
``<queue>-poison``, and while the app runs its poison consumer records each one in the Failures table (with the
last error) and takes it off that queue; workers record permanent and malformed failures there directly, and the
inbound worker records single message references it gave up on. So a replay:

1. moves what was in ``<queue>-poison`` when it started back to ``<queue>`` as it is (the host copied the text
   unchanged): as many messages as the queue held then, so a message that fails again while the replay runs
   waits for the next one. Each is deleted from the poison queue only after it was sent, and sent only while
   this replay's lease on it holds (past it, someone else may hold it); one whose send failed is made visible
   again at once, so running the replay again finds it;
2. sends the queue's Failures rows back: a message as it was, inbound references packed together again with
   a fresh attempt count, never a row's references split over two packs; each row is deleted only after the
   message carrying its references was sent. A row that cannot be replayed (malformed, or cut at the table's
   size limit) stays, with the reason reported.

A replayed message that fails again is recorded again, so nothing is lost either way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient, QueueMessage

from sync_core import names
from sync_core.adapters.ops_store import FailureRow, FailureStore
from sync_core.adapters.storage import StorageClients
from sync_core.webhook import MAX_PACKED_BYTES, pack

MALFORMED = "malformed:"  # how a Malformed failure describes itself (sync_core.failures)
RECEIVE_BATCH = 32  # the most one receive returns
LEASE_SECONDS = 300  # while a poisoned message is being moved, no one else sees it
# A message is sent only with this much of its lease left: its send and delete (with the SDK's retries) fit in it.
LEASE_MARGIN_SECONDS = 60


class UnknownQueue(ValueError):
    """Not a queue of this service; the message lists those that are."""


def queue_named(name: str) -> str:
    """The worker queue ``name`` means (``inbound-messages`` or ``inbound-messages-poison``)."""
    queue = name.removesuffix(names.POISON_SUFFIX)
    if queue not in names.QUEUES:
        raise UnknownQueue(f"{name!r} is not one of this service's queues: {', '.join(names.QUEUES)}")
    return queue


@dataclass(frozen=True)
class Resend:
    """One message to send back, and the Failures rows it replaces."""

    message: str
    rows: tuple[str, ...]


@dataclass
class ReplayPlan:
    resend: list[Resend] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # row -> why it cannot be replayed


def _as_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def plan_replay(queue: str, rows: Sequence[FailureRow]) -> ReplayPlan:
    """Pure: what to send back to ``queue`` for these Failures rows."""
    plan = ReplayPlan()
    groups: list[tuple[str, list[dict[str, Any]]]] = []  # inbound: each row's references
    for row in rows:
        data = _as_json(row.message)
        if row.truncated:
            plan.kept[row.row] = "the recorded message was cut at the table's size limit"
        elif row.error.startswith(MALFORMED) or not isinstance(data, dict):
            plan.kept[row.row] = "malformed: it would fail again (see its error)"
        elif queue == names.QUEUE_INBOUND and isinstance(data.get("refs"), list):
            found = [ref for ref in data["refs"] if isinstance(ref, dict)]
            if found:
                groups.append((row.row, found))
            else:
                plan.kept[row.row] = "a pack without a message reference"
        elif queue == names.QUEUE_INBOUND:
            groups.append((row.row, [data]))  # one reference the inbound worker gave up on
        else:
            plan.resend.append(Resend(row.message, (row.row,)))
    plan.resend.extend(_packs(groups))
    return plan


def _size(refs: Sequence[dict[str, Any]]) -> int:
    """The room ``refs`` take in a pack, counted as ``webhook.pack`` counts it."""
    return sum(len(json.dumps(ref)) + 2 for ref in refs)


def _packed(refs: Sequence[dict[str, Any]], rows: Sequence[str]) -> list[Resend]:
    """``refs`` as packs; ``rows`` are deleted with the last of them (once every one of their references went)."""
    *first, last = pack(refs)
    return [*(Resend(message, ()) for message in first), Resend(last, tuple(rows))]


def _packs(groups: Sequence[tuple[str, list[dict[str, Any]]]]) -> list[Resend]:
    """Inbound references go back as packs, as the webhook queues them, with a fresh attempt count.

    A row's references stay in one pack (its row is deleted once that pack is sent, so a send failing half-way
    leaves every unsent reference in its row). Only a row whose references alone exceed a pack is spread over
    several, in order; it is deleted with the last of them."""
    resend: list[Resend] = []
    refs: list[dict[str, Any]] = []
    rows: list[str] = []
    size = 0
    for row, found in groups:
        room = _size(found)
        if refs and size + room > MAX_PACKED_BYTES:
            resend.extend(_packed(refs, rows))
            refs, rows, size = [], [], 0
        refs.extend(found)
        rows.append(row)
        size += room
    if refs:
        resend.extend(_packed(refs, rows))
    return resend


@dataclass
class ReplayReport:
    queue: str
    from_poison_queue: int = 0
    from_failures: int = 0  # messages sent for Failures rows
    rows_replayed: int = 0
    kept: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why the replay stopped early, if it did

    @property
    def replayed(self) -> int:
        return self.from_poison_queue + self.from_failures


# Called after each message sent back: (the queue, messages sent so far).
Progress = Callable[[str, int], None]


def replay_poison(
    queue: str, storage: StorageClients, *, dry_run: bool = False, progress: Progress | None = None
) -> ReplayReport:
    """Send back what ``queue`` gave up on (see the module docstring); stops at the first send that fails."""
    queue = queue_named(queue)
    report = ReplayReport(queue)
    tick = progress or (lambda _queue, _sent: None)
    try:
        _from_poison_queue(queue, storage, report, dry_run, tick)
        _from_failures(queue, storage, report, dry_run, tick)
    except Exception as exc:  # reported with what was done so far; nothing unsent was deleted
        report.error = f"{type(exc).__name__}: {exc}"
    return report


def _raw(storage: StorageClients, name: str) -> QueueClient:
    """A client that moves message text as it is (no base64 policy: the text is already the host's encoding)."""
    return storage.queues.get_queue_client(name)


def _from_poison_queue(
    queue: str, storage: StorageClients, report: ReplayReport, dry_run: bool, tick: Progress
) -> None:
    poison, target = _raw(storage, queue + names.POISON_SUFFIX), _raw(storage, queue)
    # The service's count "is not lower than the actual number of messages in the queue, but could be higher"
    # (learn.microsoft.com/dotnet/api/azure.storage.queues.models.queueproperties.approximatemessagescount): moving
    # at most that many leaves alone what the host poisons again while this runs (else moved round and round).
    waiting = poison.get_queue_properties().approximate_message_count or 0
    if dry_run:
        report.from_poison_queue = waiting
        return
    while waiting > 0:
        batch = list(
            poison.receive_messages(max_messages=min(RECEIVE_BATCH, waiting), visibility_timeout=LEASE_SECONDS)
        )
        if not batch:
            return
        leased_at = monotonic()
        for done, message in enumerate(batch):
            if monotonic() - leased_at > LEASE_SECONDS - LEASE_MARGIN_SECONDS:
                _release(poison, batch[done:])  # received again below, with a fresh lease
                break
            try:
                target.send_message(message.content)
            except Exception:
                _release(poison, batch[done:])
                raise
            try:
                poison.delete_message(message)  # only once it is safely back on its queue
            except Exception:  # sent, yet still here: a next run sends it again (at least once, never lost)
                _release(poison, batch[done + 1 :])
                raise
            waiting -= 1
            report.from_poison_queue += 1
            tick(queue, report.replayed)


def _release(poison: QueueClient, messages: Sequence[QueueMessage]) -> None:
    """Make messages this replay will not move now visible again at once (not after the rest of their lease)."""
    for message in messages:
        with contextlib.suppress(AzureError):  # it stays hidden until its lease ends: nothing is lost
            poison.update_message(message, visibility_timeout=0)


def _from_failures(queue: str, storage: StorageClients, report: ReplayReport, dry_run: bool, tick: Progress) -> None:
    store = FailureStore(storage.tables)
    target = storage.queue(queue)  # base64, as the Functions queue trigger expects
    # A page at a time: the continuation names the next row key, so deleting rows already read is safe.
    for page in store.pages(queue):
        plan = plan_replay(queue, page)
        report.kept.update(plan.kept)
        for resend in plan.resend:
            if not dry_run:
                target.send_message(resend.message)
                for row in resend.rows:
                    store.delete(queue, row)
            report.from_failures += 1
            report.rows_replayed += len(resend.rows)
            tick(queue, report.replayed)
