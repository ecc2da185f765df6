"""The events outbox in Azure Tables (``EventOutbox``): one row per event to Enrollio not yet delivered.

PartitionKey = the event id (``webhook-id``), so every read and write of one event is a point operation. A delivered
event's row is deleted, so the table holds only what is pending or refused, and the sweeper's query for overdue rows
(``Status eq 'pending' and DueAt lt now``) reads little. Every delivery attempt first claims its row (a conditional
update on its etag): two wake-ups of one event (the worker's retry and the sweeper's) never post it at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc
from sync_core.table_limits import clip

_ROW = ""
PENDING, REFUSED = "pending", "refused"
# Longer than any writer of a fact can run (host.json functionTimeout is 5 minutes): a row still unwoken this long
# after it was written lost its writer, and the sweeper checks its fact.
WRITER_GRACE = dt.timedelta(minutes=10)
ERROR_UNITS = 1024


@dataclass(frozen=True)
class Fact:
    """The row whose presence proves an event's fact, and what it must hold (values as ``text`` writes them);
    ``since``: moments it must hold at or after (a connection rewritten in the same status, by a retried disconnect
    or a demotion, still proves the event of that status)."""

    table: str
    partition: str
    row: str
    holds: dict[str, str] = field(default_factory=dict)
    since: dict[str, str] = field(default_factory=dict)


def text(value: object) -> str:
    """A stored value as ``Fact.holds`` compares it: a moment in ISO form (UTC), anything else as ``str``."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value)


def _at_or_after(stored: object, moment: str) -> bool:
    return isinstance(stored, dt.datetime) and utc(stored) >= dt.datetime.fromisoformat(moment)


@dataclass(frozen=True)
class OutboxRow:
    event_id: str
    type: str
    body: bytes
    status: str
    confirmed: bool  # its fact is known to be written (woken by its writer, or checked)
    created_at: dt.datetime
    due_at: dt.datetime
    attempts: int
    last_error: str
    fact: dict[str, Any]
    correlation_id: str | None
    etag: str


def _row(e: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        event_id=e["PartitionKey"],
        type=e.get("Type", ""),
        body=str(e.get("Body", "")).encode(),
        status=e.get("Status", PENDING),
        confirmed=bool(e.get("Confirmed")),
        created_at=utc(e["CreatedAt"]),
        due_at=utc(e["DueAt"]),
        attempts=int(e.get("Attempts") or 0),
        last_error=e.get("LastError") or "",
        fact=json.loads(e.get("Fact") or "{}"),
        correlation_id=e.get("CorrelationId") or None,
        etag=str(e.metadata["etag"]),  # type: ignore[attr-defined]
    )


class OutboxStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._tables = tables
        self._table = tables.get_table_client(names.TABLE_OUTBOX)

    def add(
        self, event_id: str, kind: str, body: bytes, fact: Fact, correlation_id: str | None, now: dt.datetime
    ) -> None:
        """The event's row, before its fact is written; already there (its writer ran before): left as it is."""
        entity = {
            "PartitionKey": event_id,
            "RowKey": _ROW,
            "Type": kind,
            "Body": body.decode(),
            "Status": PENDING,
            "Confirmed": False,
            "CreatedAt": now,
            "DueAt": now + WRITER_GRACE,
            "Attempts": 0,
            "Fact": json.dumps(fact.__dict__),
            "CorrelationId": correlation_id or "",
        }
        with contextlib.suppress(ResourceExistsError):
            self._table.create_entity(entity)

    def get(self, event_id: str) -> OutboxRow | None:
        try:
            return _row(self._table.get_entity(event_id, _ROW))
        except ResourceNotFoundError:
            return None

    def fact_holds(self, fact: dict[str, Any]) -> bool:
        """Whether the row that proves an event's fact is there, holding what it must."""
        try:
            entity = self._tables.get_table_client(fact["table"]).get_entity(fact["partition"], fact["row"])
        except ResourceNotFoundError:
            return False
        if not all(text(entity.get(name, "")) == value for name, value in fact.get("holds", {}).items()):
            return False
        return all(_at_or_after(entity.get(name), value) for name, value in fact.get("since", {}).items())

    def _merge(self, row: OutboxRow, values: dict[str, Any], *, conditional: bool = True) -> str | None:
        """Merge ``values`` into the row as ``row`` read it (else None: changed or gone since); its new etag."""
        entity = {"PartitionKey": row.event_id, "RowKey": _ROW, **values}
        try:
            if conditional:
                written = self._table.update_entity(
                    entity, mode=UpdateMode.MERGE, etag=row.etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                written = self._table.update_entity(entity, mode=UpdateMode.MERGE)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(written["etag"])

    def claim(self, row: OutboxRow, now: dt.datetime, lease: dt.timedelta) -> str | None:
        """Take the row for one attempt (None: another wake-up has it); the sweeper leaves it alone for ``lease``."""
        values = {"Attempts": row.attempts + 1, "DueAt": now + lease, "Confirmed": True, "Status": PENDING}
        return self._merge(row, values)

    def reopen(self, row: OutboxRow, now: dt.datetime) -> str | None:
        """A refused event woken again (replayed by an operator after a fix): a fresh horizon of attempts."""
        values = {"Status": PENDING, "Attempts": 0, "CreatedAt": now, "DueAt": now + WRITER_GRACE}
        return self._merge(row, values)

    def delivered(self, event_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(event_id, _ROW)

    def retry_at(self, event_id: str, error: str, due: dt.datetime) -> None:
        entity = {"PartitionKey": event_id, "RowKey": _ROW, "LastError": clip(error, ERROR_UNITS), "DueAt": due}
        with contextlib.suppress(ResourceNotFoundError):
            self._table.update_entity(entity, mode=UpdateMode.MERGE)

    def refuse(self, event_id: str, error: str, now: dt.datetime) -> None:
        entity = {
            "PartitionKey": event_id,
            "RowKey": _ROW,
            "Status": REFUSED,
            "LastError": clip(error, ERROR_UNITS),
            "RefusedAt": now,
        }
        with contextlib.suppress(ResourceNotFoundError):
            self._table.update_entity(entity, mode=UpdateMode.MERGE)

    def postpone(self, row: OutboxRow, due: dt.datetime) -> str | None:
        """The sweeper woke it: not again before ``due``."""
        return self._merge(row, {"DueAt": due})

    def overdue(self, now: dt.datetime) -> list[OutboxRow]:
        """Pending events whose wake-up is late: unwoken by their writer, or their queue message lost."""
        rows = self._table.query_entities("Status eq @s and DueAt lt @now", parameters={"s": PENDING, "now": now})
        return [_row(e) for e in rows]

    def rows(self) -> Iterator[OutboxRow]:
        """Every row (pending or refused): for operators' tools (the table holds only what is undelivered)."""
        for e in self._table.list_entities():
            yield _row(e)
