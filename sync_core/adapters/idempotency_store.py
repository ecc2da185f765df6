"""Idempotency keys for Enrollio's send calls: a conditional insert is the lock.

The first call with a key inserts a ``pending`` row (an insert fails with a conflict if the row exists, so
exactly one concurrent caller wins); it completes the row with its answer, or releases it when nothing was sent.
Later calls with the key read the row: same body -> the stored answer, different body -> a conflict.

The winner holds a ``Claim``: the row's etag, renewed by each of its own writes. Every later write of the winner
(prepare, complete, release) is conditional on it, so a call that outlived its lease and was taken over by a
retry (``take_over``, which changes the etag) can change nothing of the retry's: not its prepared answer, not its
completed answer, and above all not delete it (which would let a third call send again).
"""

from __future__ import annotations

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


class ClaimLost(Exception):
    """The key's row changed under this caller: a retry took the claim over (its lease ran out), or it is gone."""


@dataclass
class Claim:
    """This caller's hold on a key: the row's etag as its own last write left it, and when it was claimed."""

    user_id: str
    key: str
    etag: str
    claimed_at: dt.datetime


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


def row_key(key: str) -> str:
    """The row of an Idempotency-Key (its hash: keys are Enrollio's, of any characters)."""
    return _row(key)


class IdempotencyStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_IDEMPOTENCY)

    def claim(self, user_id: str, key: str, body_hash: str, now: dt.datetime) -> Claim | Recorded:
        """A ``Claim`` when this caller now owns the key; otherwise what is recorded for it."""
        try:
            written = self._table.create_entity(
                {"PartitionKey": user_id, "RowKey": _row(key), "BodyHash": body_hash, "Done": False, "CreatedAt": now}
            )
            return Claim(user_id, key, str(written["etag"]), now)
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

    def take_over(self, user_id: str, key: str, recorded: Recorded, now: dt.datetime) -> Claim | None:
        """Renew an orphaned claim's lease for this caller; None when another caller got there first."""
        try:
            written = self._table.update_entity(
                {"PartitionKey": user_id, "RowKey": _row(key), "CreatedAt": now},
                mode=UpdateMode.MERGE,
                etag=recorded.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return Claim(user_id, key, str(written["etag"]), now)

    def _update(self, claim: Claim, values: dict[str, Any]) -> None:
        """Merge ``values`` into the claim's row if it is still this caller's; else ``ClaimLost``."""
        try:
            written = self._table.update_entity(
                {"PartitionKey": claim.user_id, "RowKey": _row(claim.key), **values},
                mode=UpdateMode.MERGE,
                etag=claim.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ClaimLost(f"the claim of key {claim.key!r} is no longer this call's") from None
        claim.etag = str(written["etag"])

    def prepare(self, claim: Claim, answer: Any, draft_path: str, connection_id: str) -> None:
        """Write down, before sending, what the send will answer and which draft it sends."""
        self._update(claim, {"Prepared": json.dumps(answer), "DraftPath": draft_path, "ConnectionId": connection_id})

    def holds(self, claim: Claim) -> bool:
        """Whether the key's row is still as this caller's last write left it (nobody took it over)."""
        try:
            return str(self._table.get_entity(claim.user_id, _row(claim.key)).metadata["etag"]) == claim.etag
        except ResourceNotFoundError:
            return False

    def complete(self, claim: Claim, status: int, answer: Any) -> None:
        self._update(claim, {"Done": True, "Status": status, "Answer": json.dumps(answer)})

    def release(self, claim: Claim) -> bool:
        """Forget a claim whose call sent nothing, so a retry may proceed. A claim taken over is left alone: False."""
        try:
            self._table.delete_entity(
                claim.user_id, _row(claim.key), etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            return False
        return True
