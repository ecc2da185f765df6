"""Signatures already accepted, so each is accepted once: a conditional insert is the check.

PartitionKey = ``{kind}-{hour its signature stops being accepted}`` and RowKey = the signature's SHA-256, both
derived from what was signed, so a replay lands on the same row and its insert conflicts. Rows are useless once
their hour has passed (the signature is refused as stale or expired anyway); pruning deletes whole past
partitions with a key-range query, never a scan of live rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from itertools import islice

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient

from sync_core import names

_HOUR = 3600


def _partition(kind: str, hour: int) -> str:
    return f"{kind}-{hour:010d}"


class SpentSignatures:
    def __init__(self, tables: TableServiceClient) -> None:
        self._table = tables.get_table_client(names.TABLE_SPENT_SIGNATURES)

    def spend(self, kind: str, signature: str, expires_at: dt.datetime) -> bool:
        """Record ``signature`` as used; False when it was used before (a replay).

        The row carries a random claim of this call: the SDK retries an insert whose answer was a 500/503/504
        (azure-core's RetryPolicy), which may have been written all the same, and its retry then conflicts with
        our own row. A conflict is a replay only when the row holds another call's claim."""
        partition = _partition(kind, int(expires_at.timestamp()) // _HOUR)
        row = hashlib.sha256(signature.encode()).hexdigest()
        claim = secrets.token_hex(16)
        entity = {"PartitionKey": partition, "RowKey": row, "ExpiresAt": expires_at, "Claim": claim}
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            existing = self._table.get_entity(partition, row, select=["Claim"])
            return existing.get("Claim") == claim
        return True

    def prune(self, kinds: tuple[str, ...], now: dt.datetime) -> int:
        """Delete the rows of every hour that has fully passed; how many were deleted."""
        current = int(now.timestamp()) // _HOUR
        deleted = 0
        for kind in kinds:
            rows = self._table.query_entities(
                "PartitionKey ge @low and PartitionKey lt @high",
                parameters={"low": _partition(kind, 0), "high": _partition(kind, current)},
                select=["PartitionKey", "RowKey"],
            )
            by_partition: dict[str, list[str]] = {}
            for row in rows:
                by_partition.setdefault(row["PartitionKey"], []).append(row["RowKey"])
            for partition, keys in by_partition.items():
                remaining = iter(keys)
                while batch := list(islice(remaining, 100)):  # a transaction holds at most 100 operations
                    self._table.submit_transaction(
                        [("delete", {"PartitionKey": partition, "RowKey": key}) for key in batch]
                    )
                    deleted += len(batch)
        return deleted
