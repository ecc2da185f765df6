"""Each connection's catch-up run, as one row beside its delta cursors (``DeltaCursors``, RowKey ``catchup-run``).

Written with etag conditions, so two instances never both start a run of one connection, and a request noted
while a run is in progress is never lost to that run's last write. The row goes with the connection's cursors
when it disconnects (``CursorStore.forget``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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
            etag=str(e.metadata["etag"]),
        )

    def write(self, connection_id: str, seen: RunState, new: RunState) -> RunState | None:
        """Replace the row by ``new`` if it is still as ``seen``; None when another writer changed it first."""
        entity: dict[str, Any] = {"PartitionKey": connection_id, "RowKey": RUN_ROW}
        for name, value in (
            ("RunningRequest", new.running_request.isoformat() if new.running_request else None),  # exact
            ("RunningUntil", new.running_until),
            ("CompletedFrom", new.completed_from),
            ("WantedAt", new.wanted_at),
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
        return RunState(new.running_request, new.running_until, new.completed_from, new.wanted_at, written["etag"])
