"""What storage holds, as a comparable value: every table row (with its etag), blob (with its etag) and queue's
message count. Two equal snapshots mean nothing was written in between (an insert, an update or a delete)."""

from __future__ import annotations

from sync_core import names
from sync_core.adapters.storage import StorageClients

Snapshot = dict[str, frozenset[tuple[str, ...]] | int]


def snapshot(storage: StorageClients, *, tables: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> Snapshot:
    """Every table (or only ``tables``: then no container or queue), less the tables in ``skip``."""
    taken: Snapshot = {}
    for table in tables if tables is not None else names.TABLES:
        if table in skip:
            continue
        rows = storage.tables.get_table_client(table).list_entities(select=["PartitionKey", "RowKey"])
        taken[f"table {table}"] = frozenset((e["PartitionKey"], e["RowKey"], str(e.metadata["etag"])) for e in rows)
    if tables is not None:
        return taken
    for container in names.CONTAINERS:
        blobs = storage.blobs.get_container_client(container).list_blobs()
        taken[f"container {container}"] = frozenset((b.name, str(b.etag)) for b in blobs)
    for queue in (*names.QUEUES, *names.POISON_QUEUES):
        taken[f"queue {queue}"] = (
            storage.queues.get_queue_client(queue).get_queue_properties().approximate_message_count
        )
    return taken


def changes(before: Snapshot, after: Snapshot) -> dict[str, object]:
    """What differs, by table, container or queue (empty when nothing was written)."""
    out: dict[str, object] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if isinstance(old, frozenset) and isinstance(new, frozenset):
            out[name] = {"added": sorted(new - old), "removed": sorted(old - new)}
        else:
            out[name] = {"before": old, "after": new}
    return out
