"""Events to Enrollio: what this service tells Enrollio's backend when a fact happens, and the outbox that keeps it.

The facts: a message of an Enrollio thread synced (``message.synced``) or did not, with its reason
(``message.skipped``); a send through Outlook is done (``message.sent``); a connection was connected or repaired
(``connection.connected``), needs reconnecting (``connection.needs_reconnect``), was disconnected
(``connection.disconnected``). Each is announced where it is written, in one line::

    with events.recorded(services, events.message_synced(...)):
        ...write the fact...

**No fact lost, none invented.** Azure Tables has no transaction across tables, so the event's outbox row
(``EventOutbox``) is written *before* the fact, and its delivery is woken only *after* the fact was written. If the
fact's write fails or the process dies in between, the row stays unwoken; the sweeper (``delivery.sweep``, every 5
minutes) finds it once any writer must have finished, and delivers it only if the fact is there: each event names
the row that proves it (``Fact``: a message row, a skip row with that reason, a completed send, a connection row in
that status since that moment). A fact cannot exist without its outbox row (the row came first); an outbox row is
delivered only with its fact (woken by the writer after the fact, or checked by the sweeper). The one case an event
is then not delivered: its fact was superseded before the check (a skip whose message synced since, a status changed
since): Enrollio gets the newer fact's event instead, and the read API shows the current state.

An event's id (``webhook-id``) is derived from its fact, so a writer that runs again (a retried queue message, a
replayed send) writes the same row and Enrollio can deduplicate what at-least-once delivery repeats. Events carry
ids, reason codes and sizes, never a body, subject or address: Enrollio reads details through the read API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from sync_core import names, telemetry
from sync_core.adapters.outbox_store import Fact, OutboxStore, text
from sync_core.connections import Connection, Status
from sync_core.services import Services
from sync_core.threads import key_of


class EventType(StrEnum):
    MESSAGE_SYNCED = "message.synced"
    MESSAGE_SKIPPED = "message.skipped"
    MESSAGE_SENT = "message.sent"
    CONNECTION_CONNECTED = "connection.connected"
    CONNECTION_NEEDS_RECONNECT = "connection.needs_reconnect"
    CONNECTION_DISCONNECTED = "connection.disconnected"


# -- What Enrollio receives (the OpenAPI document's ``webhooks`` are built from these models) ------------------------


class MessageSyncedData(BaseModel):
    user_id: str
    account_id: str
    connection_id: str
    thread_id: str
    message_key: str = Field(description="the message in GET /api/threads/{thread_id}/messages")
    direction: Literal["inbound", "outbound"]
    attachments: int = Field(description="how many attachments were stored with it")
    attachment_bytes: int = Field(description="their bytes together")


class OverCap(BaseModel):
    """One attachment over the cap: sizes only (its name is in the skip, read through the API)."""

    cap: int
    graph_size: int = Field(description="the size Graph reports (Exchange's count, a little over the file's)")
    measured_size: int | None = Field(default=None, description="the file's bytes, when they were counted")
    measured_at_least: int | None = Field(default=None, description="reading stopped there: the file is larger")


class MessageSkippedData(BaseModel):
    user_id: str
    account_id: str
    connection_id: str
    thread_id: str
    message_key: str = Field(description="the skipped message in GET /api/users/{user_id}/skips")
    direction: Literal["inbound", "outbound"]
    reason: str = Field(
        description="attachment_too_large, graph_error, unreadable_message or unstorable (as the skips read names)"
    )
    over_cap: list[OverCap] = Field(default_factory=list, description="attachment_too_large: each file over the cap")


class MessageSentData(BaseModel):
    user_id: str
    account_id: str
    connection_id: str
    thread_id: str
    message_key: str = Field(description="the sent message in GET /api/threads/{thread_id}/messages")
    idempotency_key: str = Field(description="the Idempotency-Key of the POST /api/send that sent it")


class ConnectionData(BaseModel):
    user_id: str
    account_id: str
    connection_id: str
    status: Literal["connected", "needs_reconnect", "disconnected"]
    active: bool = Field(description="the address new mail goes out from")
    reason: str | None = Field(
        default=None, description="needs_reconnect: a short code (invalid_grant, subscription_failed, …)"
    )


EVENT_DATA: dict[EventType, type[BaseModel]] = {
    EventType.MESSAGE_SYNCED: MessageSyncedData,
    EventType.MESSAGE_SKIPPED: MessageSkippedData,
    EventType.MESSAGE_SENT: MessageSentData,
    EventType.CONNECTION_CONNECTED: ConnectionData,
    EventType.CONNECTION_NEEDS_RECONNECT: ConnectionData,
    EventType.CONNECTION_DISCONNECTED: ConnectionData,
}


# -- An event, and the fact that proves it ------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    event_id: str
    type: EventType
    occurred_at: dt.datetime
    data: BaseModel
    fact: Fact
    correlation_id: str | None = None

    def body(self) -> bytes:
        """The JSON Enrollio receives (the Standard Webhooks payload shape: type, timestamp, data)."""
        payload: dict[str, Any] = {
            "type": self.type.value,
            "timestamp": self.occurred_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "data": self.data.model_dump(exclude_none=True),
            "correlation_id": self.correlation_id,
        }
        return json.dumps(payload, separators=(",", ":")).encode()


def event_id(kind: EventType, *identity: str) -> str:
    """The ``webhook-id`` of a fact: the same fact, the same id, however often its writer runs."""
    digest = hashlib.sha256("\n".join((kind.value, *identity)).encode()).hexdigest()
    return f"evt_{digest[:32]}"


def _event(kind: EventType, identity: tuple[str, ...], data: BaseModel, fact: Fact, at: dt.datetime) -> Event:
    return Event(event_id(kind, *identity), kind, at, data, fact, telemetry.correlation_id())


def message_synced(
    connection: Connection, thread_id: str, internet_message_id: str, direction: str, sizes: list[int], at: dt.datetime
) -> Event:
    key = key_of(internet_message_id)
    data = MessageSyncedData(
        user_id=connection.user_id,
        account_id=connection.account_id,
        connection_id=connection.connection_id,
        thread_id=thread_id,
        message_key=key,
        direction="outbound" if direction == "outbound" else "inbound",
        attachments=len(sizes),
        attachment_bytes=sum(sizes),
    )
    # An Outlook message's row: a row of Enrollio's own send (origin enrollio) is message.sent's fact, not this.
    fact = Fact(names.TABLE_MESSAGES, thread_id, key, {"Origin": "outlook"})
    return _event(EventType.MESSAGE_SYNCED, (thread_id, key), data, fact, at)


def _over_cap(details: tuple[dict[str, object], ...]) -> list[OverCap]:
    sizes = ("cap", "graph_size", "measured_size", "measured_at_least")
    return [
        OverCap.model_validate({k: d[k] for k in sizes if isinstance(d.get(k), int)})
        for d in details
        if isinstance(d.get("cap"), int) and isinstance(d.get("graph_size"), int)
    ]


def message_skipped(
    connection: Connection,
    thread_id: str,
    internet_message_id: str,
    direction: str,
    reason: str,
    details: tuple[dict[str, object], ...],
    at: dt.datetime,
) -> Event:
    message_key = key_of(internet_message_id)
    data = MessageSkippedData(
        user_id=connection.user_id,
        account_id=connection.account_id,
        connection_id=connection.connection_id,
        thread_id=thread_id,
        message_key=message_key,
        direction="outbound" if direction == "outbound" else "inbound",
        reason=reason,
        over_cap=_over_cap(details) if reason == "attachment_too_large" else [],
    )
    row = key_of(connection.connection_id + internet_message_id)  # the skip row's key (thread_store.record_skip)
    fact = Fact(names.TABLE_SKIPS, connection.user_id, row, {"Reason": reason})
    return _event(EventType.MESSAGE_SKIPPED, (connection.user_id, row, reason), data, fact, at)


def message_sent(
    user_id: str,
    account_id: str,
    connection_id: str,
    answer: dict[str, Any],
    idempotency_row: str,
    key: str,
    at: dt.datetime,
) -> Event:
    """A send through Outlook is done: its Idempotency-Key row holds Graph's acceptance (status 200)."""
    data = MessageSentData(
        user_id=user_id,
        account_id=account_id,
        connection_id=connection_id,
        thread_id=str(answer["thread_id"]),
        message_key=key_of(str(answer["internet_message_id"])),
        idempotency_key=key,
    )
    fact = Fact(names.TABLE_IDEMPOTENCY, user_id, idempotency_row, {"Done": "True", "Status": "200"})
    return _event(EventType.MESSAGE_SENT, (user_id, idempotency_row), data, fact, at)


_CONNECTION_EVENTS = {
    Status.CONNECTED: EventType.CONNECTION_CONNECTED,
    Status.NEEDS_RECONNECT: EventType.CONNECTION_NEEDS_RECONNECT,
    Status.DISCONNECTED: EventType.CONNECTION_DISCONNECTED,
}


def reason_code(reason: str) -> str | None:
    """The code at the start of a status reason (``invalid_grant: AADSTS…`` -> ``invalid_grant``): the identity
    platform's text after it may name the account, so it stays in the read API, shown to the user only."""
    code = reason.split(":", 1)[0].strip()
    return code if code and len(code) <= 64 and code.replace("_", "").isalnum() else ("grant_lost" if reason else None)


def connection_changed(before: Connection | None, after: Connection) -> Event | None:
    """The event of a connection's new status, or None when its status did not change (a demotion, a repeat)."""
    if before is not None and before.status is after.status:
        return None
    data = ConnectionData(
        user_id=after.user_id,
        account_id=after.account_id,
        connection_id=after.connection_id,
        status=after.status.value,
        active=after.active,
        reason=reason_code(after.status_reason) if after.status is Status.NEEDS_RECONNECT else None,
    )
    at = text(after.updated_at)
    # In that status since that moment: a retried disconnect or a demotion rewrites UpdatedAt, not the fact.
    fact = Fact(
        names.TABLE_CONNECTIONS, after.user_id, after.connection_id, {"Status": after.status.value}, {"UpdatedAt": at}
    )
    return _event(
        _CONNECTION_EVENTS[after.status], (after.connection_id, after.status.value, at), data, fact, after.updated_at
    )


# -- Writing it ---------------------------------------------------------------------------------------------------


@dataclass
class Announcement:
    """The block's say in the wake-up: ``nothing_new()`` when the fact turned out to be there already (a duplicate),
    so it is not woken now (the sweeper still checks it: the earlier writer may have died before its wake-up)."""

    wake: bool = True

    def nothing_new(self) -> None:
        self.wake = False


@contextlib.contextmanager
def recorded(services: Services, event: Event | None) -> Iterator[Announcement]:
    """The event's outbox row before the block (which writes the fact), its delivery woken after it."""
    announcement = Announcement()
    # Kept while the events settings are wrong too (events_problem): delivered once they are fixed.
    if event is None or not services.settings.enrollio_events_url:
        yield announcement
        return
    outbox = OutboxStore(services.storage.tables)
    outbox.add(event.event_id, event.type.value, event.body(), event.fact, event.correlation_id, services.clock.now())
    yield announcement
    if announcement.wake:
        wake(services, event.event_id, attempt=0)


def wake(services: Services, event_id: str, *, attempt: int, check: bool = False, delay: float = 0) -> None:
    """Ask the events worker to make attempt ``attempt + 1`` at ``event_id`` (after ``delay`` seconds); stale once
    another attempt was made; ``check``: its fact first."""
    message = json.dumps({"event_id": event_id, "attempt": attempt, **({"check": True} if check else {})})
    services.storage.queue(names.QUEUE_EVENTS).send_message(message, visibility_timeout=int(delay) or None)
