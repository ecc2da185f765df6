"""Each connection's catch-up run, as one row beside its delta cursors (``DeltaCursors``, RowKey ``catchup-run``):
the run under way, the last completed one, and when the timer next asks for one (``catchup_schedule``).

Written with etag conditions, so two instances never both start a run of one connection, and a request noted
while a run is in progress is never lost to that run's last write. The row goes with the connection's cursors
when it disconnects (``CursorStore.forget``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc

RUN_ROW = "catchup-run"  # never a folder's name: folders are "inbox" and "sentitems"


@dataclass(frozen=True)
class RunState:
    """What is known of a connection's catch-up runs."""

    running_request: dt.datetime | None = None  # requested_at of the request whose run is in progress
    running_until: dt.datetime | None = None  # after this, a run in progress is taken for dead
    completed_from: dt.datetime | None = None  # when the last completed run started: it saw all that came before
    wanted_at: dt.datetime | None = None  # the newest request dropped while a run was in progress
    interval: dt.timedelta | None = None  # between scheduled runs, as the last completed run left it
    due_at: dt.datetime | None = None  # when the timer next requests a run (``catchup_schedule``)
    etag: str | None = None  # None: no row yet


def _moment(entity: dict[str, Any], name: str) -> dt.datetime | None:
    value = entity.get(name)
    return utc(value) if value else None


class RunStore:
    """Reads and writes the ``catchup-run`` row; every write is conditional on the state it was decided on."""

    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_DELTA_CURSORS)

    def get(self, connection_id: str) -> RunState:
        try:
            e = self._table.get_entity(connection_id, RUN_ROW)
        except ResourceNotFoundError:
            return RunState()
        return RunState(
            running_request=_moment(e, "RunningRequest"),
            running_until=_moment(e, "RunningUntil"),
            completed_from=_moment(e, "CompletedFrom"),
            wanted_at=_moment(e, "WantedAt"),
            interval=dt.timedelta(seconds=int(e["IntervalSeconds"])) if e.get("IntervalSeconds") else None,
            due_at=_moment(e, "DueAt"),
            etag=str(e.metadata["etag"]),
        )

    def due_times(self) -> dict[str, dt.datetime]:
        """Every connection's next scheduled run, by connection id (the timer's scan: one query over the table,
        only the run rows' two properties come back; a connection without one is due)."""
        rows = self._table.query_entities(
            "RowKey eq @run", parameters={"run": RUN_ROW}, select=["PartitionKey", "DueAt"], results_per_page=1000
        )
        return {str(e["PartitionKey"]): utc(e["DueAt"]) for e in rows if e.get("DueAt")}

    def write(self, connection_id: str, seen: RunState, new: RunState) -> RunState | None:
        """Replace the row by ``new`` if it is still as ``seen``; None when another writer changed it first."""
        entity: dict[str, Any] = {"PartitionKey": connection_id, "RowKey": RUN_ROW}
        for name, value in (
            ("RunningRequest", new.running_request.isoformat() if new.running_request else None),  # exact
            ("RunningUntil", new.running_until),
            ("CompletedFrom", new.completed_from),
            ("WantedAt", new.wanted_at),
            ("IntervalSeconds", int(new.interval.total_seconds()) if new.interval else None),
            ("DueAt", new.due_at),
        ):
            if value is not None:
                entity[name] = value
        try:
            if seen.etag is None:
                written = self._table.create_entity(entity)
            else:
                written = self._table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=seen.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None
        return replace(new, etag=written["etag"])
