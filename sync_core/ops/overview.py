"""What an operator looks at: connections by status, queue depths, recent failures, skips by reason, events to
Enrollio not yet delivered.

Each reader returns plain records (the CLI renders them as tables or JSON). The whole-table scans (connections,
subscriptions, skips since a time) page through the table and report progress: fine for an operator's tool, never
on a hot path. Nothing here shows a message's subject, body or attachment names: reasons, counts, sizes and ids only.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, MailboxStore, SubscriptionStore
from sync_core.adapters.ops_store import FailureStore
from sync_core.adapters.outbox_store import PENDING, REFUSED, OutboxStore
from sync_core.adapters.storage import StorageClients
from sync_core.adapters.thread_store import MessageStore
from sync_core.connections import Connection

# Called as pages of a scan arrive: (what is being read, how many rows so far).
Progress = Callable[[str, int], None]


def no_progress(what: str, rows: int) -> None:
    """The default: say nothing."""


@dataclass(frozen=True)
class ConnectionRow:
    user_id: str
    connection_id: str
    address: str
    status: str  # as Enrollio's connections read shows it: active, connected, needs_reconnect, disconnected
    reason: str
    subscription_expires_at: dt.datetime | None
    last_notification_at: dt.datetime | None


def shown_status(connection: Connection) -> str:
    """The status as ``GET /api/users/{id}/connections`` shows it (``active``: the one new email goes from)."""
    return "active" if connection.active and connection.can_send else connection.status.value


def connections(storage: StorageClients, progress: Progress = no_progress) -> list[ConnectionRow]:
    """Every connection with its mailbox's subscription expiry and last notification (a mailbox several users
    connected shows the same on each of their connections; a disconnected one shows neither)."""
    expiries: dict[str, dt.datetime] = {}  # by mailbox
    for subscription in SubscriptionStore(storage.tables).all():
        owner = subscription.mailbox
        if owner not in expiries or subscription.expires_at > expiries[owner]:
            expiries[owner] = subscription.expires_at
    heard = {r.mailbox: r.last_notification_at for r in MailboxStore(storage.tables).records()}
    rows: list[ConnectionRow] = []
    for page in ConnectionStore(storage.tables).pages():
        rows.extend(
            ConnectionRow(
                user_id=c.user_id,
                connection_id=c.connection_id,
                address=c.address,
                status=shown_status(c),
                reason=c.status_reason,
                subscription_expires_at=expiries.get(c.mailbox) if c.syncs else None,
                last_notification_at=heard.get(c.mailbox) if c.syncs else None,
            )
            for c in page
        )
        progress("connections", len(rows))
    return sorted(rows, key=lambda r: (r.status, r.user_id, r.address))


def by_status(rows: list[ConnectionRow]) -> dict[str, int]:
    return dict(sorted(Counter(r.status for r in rows).items()))


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    messages: int
    poison: int


def queue_depths(storage: StorageClients) -> list[QueueDepth]:
    """Approximate message counts (the service's own figure) of every queue and its poison queue."""

    def count(name: str) -> int:
        return storage.queues.get_queue_client(name).get_queue_properties().approximate_message_count or 0

    return [QueueDepth(q, count(q), count(q + names.POISON_SUFFIX)) for q in names.QUEUES]


@dataclass(frozen=True)
class FailureView:
    queue: str
    at: dt.datetime
    error: str
    message: str


def recent_failures(storage: StorageClients, limit: int) -> list[FailureView]:
    """The newest ``limit`` failures of each queue, newest first overall."""
    store = FailureStore(storage.tables)
    found: list[FailureView] = []
    for queue in names.QUEUES:
        taken = 0
        for page in store.pages(queue, page_size=min(limit, 1000)):
            for row in page[: limit - taken]:
                found.append(FailureView(queue, row.at, row.error, row.message))
            taken = min(limit, taken + len(page))
            if taken >= limit:
                break
    return sorted(found, key=lambda f: f.at, reverse=True)


@dataclass(frozen=True)
class SkipView:
    user_id: str
    thread_id: str
    connection_id: str
    reason: str
    detail: str  # sizes only: no subject, no attachment name
    at: dt.datetime


@dataclass
class SkipsOverview:
    since: dt.datetime | None = None  # None: every skip ever recorded
    by_reason: dict[str, int] = field(default_factory=dict)
    recent: list[SkipView] = field(default_factory=list)
    scanned: int = 0


def _size(detail: dict[str, object]) -> str | None:
    """An attachment's size as its skip detail says it: its counted bytes, else Graph's figure ("size" on rows
    written before the details told the two apart)."""
    if "measured_size" in detail:
        return f"{detail['measured_size']} bytes"
    if "measured_at_least" in detail:
        return f"more than {detail['measured_at_least']} bytes"
    graph = detail.get("graph_size", detail.get("size"))
    return None if graph is None else f"{graph} bytes (Graph's size)"


def _sizes(details: tuple[dict[str, object], ...]) -> str:
    sizes = [size for size in map(_size, details) if size]
    return f"{len(details)} item(s)" + (f": {', '.join(sizes)}" if sizes else "")


def skips(
    storage: StorageClients, limit: int, since: dt.datetime | None = None, progress: Progress = no_progress
) -> SkipsOverview:
    """Every user's skips since ``since`` counted by reason (a scan of the Skips table, filtered on the time each
    was recorded), and the newest ``limit`` of them."""
    overview = SkipsOverview(since=since)
    reasons: Counter[str] = Counter()
    newest: list[SkipView] = []
    for page in MessageStore(storage.tables, storage.blobs).skip_pages(since):
        for s in page:
            reasons[s.reason] += 1
            newest.append(SkipView(s.user_id, s.thread_id, s.connection_id, s.reason, _sizes(s.details), s.at))
        newest = sorted(newest, key=lambda v: v.at, reverse=True)[:limit]
        overview.scanned += len(page)
        progress("skips", overview.scanned)
    overview.by_reason = dict(reasons.most_common())
    overview.recent = newest
    return overview


@dataclass(frozen=True)
class EventView:
    event_id: str
    type: str
    status: str  # pending (waiting for its next attempt) or refused (recorded in Failures; replay after a fix)
    created_at: dt.datetime
    attempts: int
    next_attempt_at: dt.datetime | None  # pending only
    last_error: str  # what Enrollio answered last ("HTTP 503", "no answer (ConnectionError)", ...)


@dataclass
class OutboxOverview:
    pending: int = 0
    refused: int = 0
    oldest_pending_at: dt.datetime | None = None
    recent: list[EventView] = field(default_factory=list)


def outbox(storage: StorageClients, limit: int, progress: Progress = no_progress) -> OutboxOverview:
    """The events to Enrollio not yet delivered (the outbox holds only those): pending and refused counts, the
    oldest pending one's age, and up to ``limit`` of them, refused first, then the oldest pending."""
    found = OutboxOverview()
    views: list[EventView] = []
    for row in OutboxStore(storage.tables).rows():
        pending = row.status == PENDING
        found.pending += pending
        found.refused += row.status == REFUSED
        if pending and (found.oldest_pending_at is None or row.created_at < found.oldest_pending_at):
            found.oldest_pending_at = row.created_at
        views.append(
            EventView(
                row.event_id, row.type, row.status, row.created_at, row.attempts, row.due_at if pending else None,
                row.last_error,
            )
        )  # fmt: skip
        if len(views) % 1000 == 0:
            progress("events", len(views))
    found.recent = sorted(views, key=lambda v: (v.status != REFUSED, v.created_at))[:limit]
    return found
