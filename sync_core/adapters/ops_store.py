"""Operational state: delta cursors per connection and folder, and failures operators must see."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from sync_core import names

MAX_TEXT = 30_000  # a table string property holds 32K UTF-16 characters


class CursorStore:
    """The deltaLink to resume each folder's delta query from (CONTRACT.md section 7: store the whole URL)."""

    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_DELTA_CURSORS)

    def get(self, connection_id: str, folder: str) -> str | None:
        try:
            return str(self._table.get_entity(connection_id, folder)["DeltaLink"])
        except ResourceNotFoundError:
            return None

    def save(self, connection_id: str, folder: str, delta_link: str) -> None:
        self._table.upsert_entity({"PartitionKey": connection_id, "RowKey": folder, "DeltaLink": delta_link})

    def reset(self, connection_id: str, folder: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(connection_id, folder)


class FailureStore:
    """What the queues gave up on (``<queue>-poison``), newest first per queue."""

    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_FAILURES)

    def record(self, queue: str, message: str, at: dt.datetime, dequeue_count: int | None = None) -> str:
        # Newest first: RowKeys sort ascending, so invert the timestamp.
        row = f"{2**63 - int(at.timestamp() * 1_000_000):020d}-{uuid.uuid4().hex[:8]}"
        self._table.create_entity(
            {
                "PartitionKey": queue,
                "RowKey": row,
                "Message": message[:MAX_TEXT],
                "At": at,
                "DequeueCount": dequeue_count or 0,
            }
        )
        return row

    def recent(self, queue: str, limit: int = 50) -> list[dict[str, object]]:
        rows = self._table.query_entities("PartitionKey eq @q", parameters={"q": queue}, results_per_page=limit)
        out: list[dict[str, object]] = []
        for e in rows:
            out.append({"queue": queue, "id": e["RowKey"], "message": e["Message"], "at": e["At"].isoformat()})
            if len(out) >= limit:
                break
        return out
