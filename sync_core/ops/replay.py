"""``replay-poison QUEUE``: after a fix, send what the service gave up on back to its queue.

What was given up on lives in two places. The host moves a message that failed ``maxDequeueCount`` times to
``<queue>-poison``, and while the app runs its poison consumer records each one in the Failures table (with the
last error) and takes it off that queue; workers record permanent and malformed failures there directly, and the
inbound worker records single message references it gave up on. So a replay:

1. moves what is still in ``<queue>-poison`` back to ``<queue>`` as it is (the host copied the text unchanged),
   deleting each message from the poison queue only after it was sent;
2. sends the queue's Failures rows back: a message as it was, inbound references packed together again with
   a fresh attempt count; each row is deleted only after its message was sent. A row that cannot be replayed
   (malformed, or cut at the table's size limit) stays, with the reason reported.

A replayed message that fails again is recorded again, so nothing is lost either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.storage.queue import QueueClient

from sync_core import names
from sync_core.adapters.ops_store import FailureRow, FailureStore
from sync_core.adapters.storage import StorageClients
from sync_core.webhook import pack

MALFORMED = "malformed:"  # how a Malformed failure describes itself (sync_core.failures)
RECEIVE_BATCH = 32  # the most one receive returns
LEASE_SECONDS = 60  # while a poisoned message is being moved, no one else sees it


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
    refs: list[tuple[dict[str, Any], str]] = []
    for row in rows:
        data = _as_json(row.message)
        if row.truncated:
            plan.kept[row.row] = "the recorded message was cut at the table's size limit"
        elif row.error.startswith(MALFORMED) or not isinstance(data, dict):
            plan.kept[row.row] = "malformed: it would fail again (see its error)"
        elif queue == names.QUEUE_INBOUND and isinstance(data.get("refs"), list):
            found = [ref for ref in data["refs"] if isinstance(ref, dict)]
            refs.extend((ref, row.row) for ref in found)
            if not found:
                plan.kept[row.row] = "a pack without a message reference"
        elif queue == names.QUEUE_INBOUND:
            refs.append((data, row.row))  # one reference the inbound worker gave up on
        else:
            plan.resend.append(Resend(row.message, (row.row,)))
    # Inbound references go back as packs, as the webhook queues them, with a fresh attempt count.
    start = 0
    for message in pack([ref for ref, _ in refs]):
        count = len(json.loads(message)["refs"])
        owners = tuple(dict.fromkeys(row for _, row in refs[start : start + count]))
        plan.resend.append(Resend(message, owners))
        start += count
    return plan


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
    if dry_run:
        count = poison.get_queue_properties().approximate_message_count or 0
        report.from_poison_queue = count
        return
    while True:
        batch = list(poison.receive_messages(max_messages=RECEIVE_BATCH, visibility_timeout=LEASE_SECONDS))
        if not batch:
            return
        for message in batch:
            target.send_message(message.content)
            poison.delete_message(message)  # only once it is safely back on its queue
            report.from_poison_queue += 1
            tick(queue, report.replayed)


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
