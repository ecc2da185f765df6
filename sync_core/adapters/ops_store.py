"""Operational state: delta cursors per connection and folder, and failures operators must see."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc
from sync_core.table_limits import clip

MAX_TEXT = 30_000  # UTF-16 units: a table string property holds 32K (table_limits)


@dataclass(frozen=True)
class DeltaCursor:
    """Where a folder's next delta round starts."""

    delta_link: str  # the whole deltaLink URL of the last round ("" before the first round completes)
    start_from: dt.datetime | None = None  # without a deltaLink: only mail received from then on (R8)
    saved_at: dt.datetime | None = None  # when the last round's deltaLink was saved (when the row was, before)
    next_link: str = ""  # a round under way: the nextLink of its next page (resumed from after a pause or crash)
    round_started: dt.datetime | None = None  # when the round under way started
    round_count: int = 0  # the messages its pages have shown so far (a filtered round stops at 5,000)


@dataclass(frozen=True)
class RoundPage:
    """A round under way, after one of its pages."""

    next_link: str
    started: dt.datetime
    count: int


class CursorStore:
    """The deltaLink to resume each folder's delta query from (CONTRACT.md section 7: store the whole URL)."""

    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_DELTA_CURSORS)

    def get(self, connection_id: str, folder: str) -> DeltaCursor | None:
        try:
            e = self._table.get_entity(connection_id, folder)
        except ResourceNotFoundError:
            return None
        start, round_started = e.get("StartFrom"), e.get("RoundStarted")
        return DeltaCursor(
            str(e.get("DeltaLink") or ""),
            utc(start) if start else None,
            utc(e.get("DeltaSavedAt") or e.metadata["timestamp"]),
            next_link=str(e.get("NextLink") or ""),
            round_started=utc(round_started) if round_started else None,
            round_count=int(e.get("RoundCount") or 0),
        )

    def save(self, connection_id: str, folder: str, delta_link: str) -> None:
        """The round's deltaLink; a start time set earlier stays (a reset starts from it again)."""
        entity = {
            "PartitionKey": connection_id,
            "RowKey": folder,
            "DeltaLink": delta_link,
            "DeltaSavedAt": dt.datetime.now(dt.UTC),
            "NextLink": "",
        }
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def save_page(self, cursor: DeltaCursor | None, connection_id: str, folder: str, page: RoundPage) -> None:
        """Where the round under way goes on (its next page), kept beside the last round's deltaLink (and when
        that was saved: a reset restarts from then, section 7)."""
        entity: dict[str, object] = {
            "PartitionKey": connection_id,
            "RowKey": folder,
            "NextLink": page.next_link,
            "RoundStarted": page.started,
            "RoundCount": page.count,
        }
        if cursor is not None and cursor.delta_link and cursor.saved_at is not None:
            entity["DeltaSavedAt"] = cursor.saved_at
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def start_from(self, connection_id: str, folder: str, moment: dt.datetime) -> None:
        """Forget the deltaLink: the next round starts afresh with the mail received from ``moment`` on."""
        entity = {"PartitionKey": connection_id, "RowKey": folder, "DeltaLink": "", "StartFrom": moment}
        self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def forget_folder(self, connection_id: str, folder: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(connection_id, folder)

    def forget(self, connection_id: str) -> None:
        """Every cursor of the connection (it was disconnected: nothing resumes from them, R8)."""
        rows = self._table.query_entities("PartitionKey eq @c", parameters={"c": connection_id}, select=["RowKey"])
        for row in list(rows):
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(connection_id, row["RowKey"])


class FailureStore:
    """What the queues gave up on, and why: newest first per queue.

    A worker notes each error against the message's content hash (the id changes when the host moves a message
    to ``<queue>-poison``; the content does not), so the poison consumer can record the last reason with it.
    """

    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_FAILURES)

    @staticmethod
    def _note_key(message: str) -> str:
        return hashlib.sha256(message.encode()).hexdigest()[:40]

    def note_error(self, queue: str, message: str, error: str, at: dt.datetime) -> None:
        self._table.upsert_entity(
            {
                "PartitionKey": f"errors-{queue}",
                "RowKey": self._note_key(message),
                "Error": clip(error, MAX_TEXT),
                "At": at,
            }
        )

    def last_error(self, queue: str, message: str) -> str | None:
        try:
            return str(self._table.get_entity(f"errors-{queue}", self._note_key(message))["Error"])
        except ResourceNotFoundError:
            return None

    def record(self, queue: str, message: str, at: dt.datetime, error: str | None = None) -> str:
        """Record a message the service gave up on, with the given error or the last one noted for it."""
        # Newest first: RowKeys sort ascending, so invert the timestamp.
        row = f"{2**63 - int(at.timestamp() * 1_000_000):020d}-{uuid.uuid4().hex[:8]}"
        reason = error or self.last_error(queue, message) or "unknown (no error was noted)"
        self._table.create_entity(
            {
                "PartitionKey": queue,
                "RowKey": row,
                "Message": clip(message, MAX_TEXT),
                "Error": clip(reason, MAX_TEXT),
                "At": at,
            }
        )
        return row

    def recent(self, queue: str, limit: int = 50) -> list[dict[str, object]]:
        rows = self._table.query_entities("PartitionKey eq @q", parameters={"q": queue}, results_per_page=limit)
        out: list[dict[str, object]] = []
        for e in rows:
            out.append(
                {
                    "queue": queue,
                    "id": e["RowKey"],
                    "message": e["Message"],
                    "error": e.get("Error", ""),
                    "at": e["At"].isoformat(),
                }
            )
            if len(out) >= limit:
                break
        return out

    def pages(self, queue: str, page_size: int = 100) -> Iterator[list[FailureRow]]:
        """Every failure recorded for ``queue``, newest first, a page at a time."""
        rows = self._table.query_entities("PartitionKey eq @q", parameters={"q": queue}, results_per_page=page_size)
        for page in rows.by_page():
            yield [
                FailureRow(queue, e["RowKey"], str(e.get("Message", "")), str(e.get("Error", "")), utc(e["At"]))
                for e in page
            ]

    def delete(self, queue: str, row: str) -> None:
        """Forget a recorded failure (its message was sent back to the queue)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(queue, row)


@dataclass(frozen=True)
class FailureRow:
    queue: str
    row: str
    message: str
    error: str
    at: dt.datetime

    @property
    def truncated(self) -> bool:
        """The message was longer than a table property holds: only its beginning was recorded."""
        return len(self.message) >= MAX_TEXT
