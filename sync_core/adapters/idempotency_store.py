"""Idempotency keys for Enrollio's send calls: a conditional insert is the lock.

The first call with a key inserts a ``pending`` row (an insert fails with a conflict if the row exists, so
exactly one concurrent caller wins); it completes the row with its answer, or releases it when nothing was sent.
Later calls with the key read the row: same body -> the stored answer, different body -> a conflict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from sync_core import names
from sync_core.adapters.storage import utc


@dataclass(frozen=True)
class Recorded:
    body_hash: str
    done: bool
    status: int
    answer: Any
    created_at: dt.datetime | None = None
    prepared: Any = None  # the answer a send will give, written before Graph is asked to send
    draft_path: str = ""  # the draft Graph was asked to send (to learn the outcome of an interrupted call)
    connection_id: str = ""
    etag: str = ""


def _row(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_IDEMPOTENCY)

    def claim(self, user_id: str, key: str, body_hash: str, now: dt.datetime) -> Recorded | None:
        """None when this caller now owns the key; otherwise what is recorded for it."""
        try:
            self._table.create_entity(
                {"PartitionKey": user_id, "RowKey": _row(key), "BodyHash": body_hash, "Done": False, "CreatedAt": now}
            )
            return None
        except ResourceExistsError:
            recorded = self.get(user_id, key)
            if recorded is None:  # released between our insert and read: try once more
                return self.claim(user_id, key, body_hash, now)
            return recorded

    def get(self, user_id: str, key: str) -> Recorded | None:
        try:
            e = self._table.get_entity(user_id, _row(key))
        except ResourceNotFoundError:
            return None
        answer = json.loads(e["Answer"]) if e.get("Answer") else None
        prepared = json.loads(e["Prepared"]) if e.get("Prepared") else None
        created = e.get("CreatedAt")
        return Recorded(
            body_hash=e["BodyHash"],
            done=bool(e.get("Done")),
            status=int(e.get("Status") or 0),
            answer=answer,
            created_at=utc(created) if created else None,
            prepared=prepared,
            draft_path=e.get("DraftPath", ""),
            connection_id=e.get("ConnectionId", ""),
            etag=str(e.metadata["etag"]),
        )

    def take_over(self, user_id: str, key: str, recorded: Recorded, now: dt.datetime) -> bool:
        """Renew an orphaned claim's lease for this caller; False when another caller got there first."""
        try:
            self._table.update_entity(
                {"PartitionKey": user_id, "RowKey": _row(key), "CreatedAt": now},
                mode=UpdateMode.MERGE,
                etag=recorded.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def prepare(self, user_id: str, key: str, answer: Any, draft_path: str, connection_id: str) -> None:
        """Write down, before sending, what the send will answer and which draft it sends."""
        self._table.update_entity(
            {
                "PartitionKey": user_id,
                "RowKey": _row(key),
                "Prepared": json.dumps(answer),
                "DraftPath": draft_path,
                "ConnectionId": connection_id,
            },
            mode=UpdateMode.MERGE,
        )

    def complete(self, user_id: str, key: str, status: int, answer: Any) -> None:
        self._table.update_entity(
            {
                "PartitionKey": user_id,
                "RowKey": _row(key),
                "Done": True,
                "Status": status,
                "Answer": json.dumps(answer),
            },
            mode=UpdateMode.MERGE,
        )

    def release(self, user_id: str, key: str) -> None:
        """Forget a claim whose call sent nothing, so a retry may proceed."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(user_id, _row(key))
