"""Threads, their lookup keys, synced messages and skips in Azure Tables; bodies and attachments in blobs.

Every inbound lookup is a point read: ``ThreadKeys`` (PK connection id) maps ``conv-<hash>`` and ``mid-<hash>``
to a thread id, ``Threads`` (PK thread id) holds the thread. A message row's key is its hashed Message-ID, so
inserting it twice (the Enrollio-sent message and its Sent Items copy, redelivered notifications) conflicts
instead of doubling. Blobs are written before the row that points at them. Rows stay within Azure Tables' limits
by construction (``table_limits``): what does not fit goes whole to a blob beside the message's body.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient

from sync_core import names
from sync_core.adapters.storage import utc
from sync_core.connections import Connection
from sync_core.matching import Direction
from sync_core.table_limits import clip, json_prefix
from sync_core.threads import Contact, SkipRecord, StoredAttachment, StoredMessage, Thread, key_of

CONTACT_LOOKUPS = 20  # recipients of one message looked up as contacts, at most (a reply has the contact early)


class ThreadStore:
    def __init__(self, tables: TableServiceClient) -> None:
        self._threads = tables.get_table_client(names.TABLE_THREADS)
        self._keys = tables.get_table_client(names.TABLE_THREAD_KEYS)

    def create(self, thread: Thread) -> None:
        """Record a thread Enrollio started; its conversationId and first Message-ID become its keys."""
        self._threads.upsert_entity(
            {
                "PartitionKey": thread.thread_id,
                "RowKey": "",
                "UserId": thread.user_id,
                "AccountId": thread.account_id,
                "ConnectionId": thread.connection_id,
                "ContactEmail": thread.contact.email,
                "ContactName": thread.contact.name,
                "ContactId": thread.contact.contact_id,
                "ConversationId": thread.conversation_id,
                "Subject": thread.subject,
                "FirstMessageId": thread.first_message_id,
                "CreatedAt": thread.created_at,
                "LatestGraphId": thread.latest_graph_id,
            }
        )
        self.add_keys(
            thread.connection_id,
            thread.thread_id,
            [thread.conversation_id],
            [thread.first_message_id],
            contacts=[thread.contact.email],
        )

    def add_keys(
        self,
        connection_id: str,
        thread_id: str,
        conversation_ids: list[str],
        message_ids: list[str],
        contacts: list[str] | None = None,
    ) -> None:
        """Point-read keys of a thread: its conversationIds, Message-IDs and (lower-cased) contact addresses."""
        ops = [
            ("upsert", {"PartitionKey": connection_id, "RowKey": f"{prefix}-{key_of(value)}", "ThreadId": thread_id})
            for prefix, values in (
                ("conv", conversation_ids),
                ("mid", message_ids),
                ("contact", [c.lower() for c in contacts or []]),
            )
            for value in values
            if value
        ]
        for start in range(0, len(ops), 100):  # a transaction holds at most 100 operations
            self._keys.submit_transaction(ops[start : start + 100])

    def get(self, thread_id: str) -> Thread | None:
        try:
            e = self._threads.get_entity(thread_id, "")
        except ResourceNotFoundError:
            return None
        return Thread(
            thread_id=thread_id,
            user_id=e["UserId"],
            account_id=e.get("AccountId", ""),
            connection_id=e["ConnectionId"],
            contact=Contact(e["ContactEmail"], e.get("ContactName", ""), e.get("ContactId", "")),
            conversation_id=e["ConversationId"],
            subject=e.get("Subject", ""),
            first_message_id=e.get("FirstMessageId", ""),
            created_at=utc(e["CreatedAt"]),
            latest_graph_id=e.get("LatestGraphId", ""),
        )

    def delete(self, thread_id: str) -> None:
        """Remove a thread recorded for a send that did not happen (its keys then point nowhere: harmless)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._threads.delete_entity(thread_id, "")

    def set_latest(self, thread_id: str, graph_id: str) -> None:
        self._threads.update_entity(
            {"PartitionKey": thread_id, "RowKey": "", "LatestGraphId": graph_id}, mode=UpdateMode.MERGE
        )

    def _thread_id_for(self, connection_id: str, row_key: str) -> str | None:
        try:
            return str(self._keys.get_entity(connection_id, row_key)["ThreadId"])
        except ResourceNotFoundError:
            return None

    def by_conversation(self, connection: Connection, conversation_id: str) -> str | None:
        return (
            self._thread_id_for(connection.connection_id, f"conv-{key_of(conversation_id)}")
            if conversation_id
            else None
        )

    def knows_contact(self, connection: Connection, addresses: tuple[str, ...]) -> bool:
        """Whether one of ``addresses`` is the contact of one of the connection's threads (one point read each,
        for the first ``CONTACT_LOOKUPS`` distinct ones)."""
        distinct = list(dict.fromkeys(a.lower() for a in addresses if a))[:CONTACT_LOOKUPS]
        return any(self._thread_id_for(connection.connection_id, f"contact-{key_of(a)}") for a in distinct)

    def by_message_ids(self, connection: Connection, message_ids: tuple[str, ...]) -> dict[str, str]:
        """Which of ``message_ids`` are known, and the thread each belongs to (one point read each)."""
        found = {}
        for mid in message_ids:
            if thread_id := self._thread_id_for(connection.connection_id, f"mid-{key_of(mid)}"):
                found[mid] = thread_id
        return found


# A row keeps the start of a longer subject and of a longer list (To, Cc, Attachments); the whole value goes in a
# blob beside the message's body, named by the row (``Overflow``). Far below 1 MiB together (table_limits).
SUBJECT_UNITS = 2048
LIST_UNITS = 16 * 1024


def _bounded_row(m: StoredMessage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row's bounded values, and the whole values of those that had to be cut (empty when none was)."""
    row: dict[str, Any] = {"Subject": clip(m.subject, SUBJECT_UNITS)}
    overflow: dict[str, Any] = {"subject": m.subject} if row["Subject"] != m.subject else {}
    lists: dict[str, list[object]] = {
        "to": list(m.to),
        "cc": list(m.cc),
        "attachments": [a.__dict__ for a in m.attachments],
    }
    for name, items in lists.items():
        row[name.title()], kept = json_prefix(items, LIST_UNITS)
        if kept < len(items):
            overflow[name] = items
    return row, overflow


def _message_entity(m: StoredMessage, row: dict[str, Any], overflow_blob: str | None) -> dict[str, Any]:
    return {
        "PartitionKey": m.thread_id,
        "RowKey": m.key,
        "InternetMessageId": clip(m.internet_message_id, SUBJECT_UNITS),
        "GraphId": m.graph_id,
        "Direction": m.direction.value,
        "From": clip(m.from_address, SUBJECT_UNITS),
        "SentAt": m.sent_at,
        "BodyBlob": m.body_blob,
        "BodyContentType": m.body_content_type,
        "Origin": m.origin,
        "Depth": m.depth,
        "Overflow": overflow_blob or "",
        "CorrelationId": m.correlation_id,
        **row,
    }


def _message(e: dict[str, Any], overflow: dict[str, Any]) -> StoredMessage:
    attachments = overflow.get("attachments") or json.loads(e.get("Attachments") or "[]")
    return StoredMessage(
        thread_id=e["PartitionKey"],
        internet_message_id=e["InternetMessageId"],
        graph_id=e.get("GraphId", ""),
        direction=Direction(e["Direction"]),
        from_address=e.get("From", ""),
        to=tuple(overflow.get("to") or json.loads(e.get("To") or "[]")),
        cc=tuple(overflow.get("cc") or json.loads(e.get("Cc") or "[]")),
        subject=overflow.get("subject") or e.get("Subject", ""),
        sent_at=utc(e["SentAt"]),
        body_blob=e.get("BodyBlob", ""),
        body_content_type=e.get("BodyContentType", "html"),
        attachments=tuple(StoredAttachment(**a) for a in attachments),
        origin=e.get("Origin", "outlook"),
        depth=int(e.get("Depth") or 0),
    )


def _bounded_details(details: tuple[dict[str, object], ...]) -> str:
    """A skip's details as JSON within ``LIST_UNITS``: the first ones, then how many more there were."""
    text, kept = json_prefix(details, LIST_UNITS - 64)
    return text if kept == len(details) else json.dumps([*details[:kept], {"more": len(details) - kept}])


# Staged blocks of at most this size: the most of an attachment held at once while it is downloaded.
BLOCK_BYTES = 1024 * 1024


class AttachmentWriter:
    """An attachment blob written as its bytes arrive: each full block is staged (Put Block), and the blob exists
    only once ``commit`` lists them (Put Block List). Never committed (the file turned out over the cap), the
    staged blocks are discarded by Azure: "uncommitted blocks will expire and be permanently deleted after 7
    days" (Azure SDK ``BlockBlobClient.CommitBlockList``; REST Put Block). A file that fits one block is one
    request (Put Blob)."""

    def __init__(self, blob: BlobClient, block_bytes: int = BLOCK_BYTES) -> None:
        self._blob, self._block_bytes = blob, block_bytes
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self.name = blob.blob_name

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._block_bytes:
            self._stage()

    def _stage(self) -> None:
        # Block ids of one blob must all have the same length (REST Put Block).
        block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
        self._blob.stage_block(block_id, bytes(self._buffer))
        self._blocks.append(BlobBlock(block_id))
        self._buffer.clear()

    def commit(self) -> str:
        """Make the blob what was written; its name."""
        if not self._blocks:
            self._blob.upload_blob(bytes(self._buffer), overwrite=True)
        else:
            if self._buffer:
                self._stage()
            self._blob.commit_block_list(self._blocks)
        self._buffer.clear()
        return self.name


class MessageStore:
    def __init__(self, tables: TableServiceClient, blobs: BlobServiceClient) -> None:
        self._messages = tables.get_table_client(names.TABLE_MESSAGES)
        self._skips = tables.get_table_client(names.TABLE_SKIPS)
        self._bodies = blobs.get_container_client(names.CONTAINER_BODIES)
        self._attachments = blobs.get_container_client(names.CONTAINER_ATTACHMENTS)

    def has(self, thread_id: str, internet_message_id: str) -> bool:
        try:
            self._messages.get_entity(thread_id, key_of(internet_message_id), select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

    def put_body(self, thread_id: str, internet_message_id: str, content: str, content_type: str) -> str:
        name = f"{thread_id}/{key_of(internet_message_id)}.{'html' if content_type == 'html' else 'txt'}"
        self._bodies.upload_blob(name, content.encode(), overwrite=True)
        return name

    def put_attachment(
        self,
        thread_id: str,
        internet_message_id: str,
        index: int,
        data: bytes | Iterable[bytes],
        length: int | None = None,
    ) -> str:
        """Store an attachment's bytes, or a reader of them with its ``length`` (uploaded block by block)."""
        name = f"{thread_id}/{key_of(internet_message_id)}/{index}"
        self._attachments.upload_blob(name, data, length=length, overwrite=True)
        return name

    def attachment_writer(self, thread_id: str, internet_message_id: str, index: int) -> AttachmentWriter:
        """A blob for an attachment's bytes, written block by block as they arrive and kept only when committed."""
        name = f"{thread_id}/{key_of(internet_message_id)}/{index}"
        return AttachmentWriter(self._attachments.get_blob_client(name))

    def delete_attachments(self, blobs: list[str]) -> None:
        """Blobs of a message that did not sync after all (an attachment turned out over the cap)."""
        for blob in blobs:
            with contextlib.suppress(ResourceNotFoundError):
                self._attachments.delete_blob(blob)

    def insert(self, message: StoredMessage) -> bool:
        """Insert the message row once; False when it was already there (a duplicate, not an error).

        What does not fit a table row (a hostile subject, thousands of recipients) is written first, whole, to a
        blob beside the body; the row keeps the start of it and names the blob.
        """
        row, overflow = _bounded_row(message)
        overflow_blob = None
        if overflow:
            overflow_blob = f"{message.thread_id}/{message.key}.overflow.json"
            self._bodies.upload_blob(overflow_blob, json.dumps(overflow).encode(), overwrite=True)
        try:
            self._messages.create_entity(_message_entity(message, row, overflow_blob))
        except ResourceExistsError:
            return False
        return True

    def _overflow(self, e: dict[str, Any]) -> dict[str, Any]:
        blob = e.get("Overflow")
        return dict(json.loads(self._bodies.download_blob(blob).readall())) if blob else {}

    def delete(self, thread_id: str, internet_message_id: str) -> None:
        """The message's row and every blob written for it (a send that did not happen)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._messages.delete_entity(thread_id, key_of(internet_message_id))
        self.discard_blobs(thread_id, internet_message_id)

    def discard_blobs(self, thread_id: str, internet_message_id: str) -> None:
        """Every blob written for a message that has no row (it did not sync after all): its body, the overflow
        beside it and its attachments. Their names all start with the thread and the message's key."""
        key = key_of(internet_message_id)
        for container, prefix in ((self._bodies, f"{thread_id}/{key}."), (self._attachments, f"{thread_id}/{key}/")):
            for blob in list(container.list_blobs(name_starts_with=prefix)):
                with contextlib.suppress(ResourceNotFoundError):
                    container.delete_blob(blob.name)

    def for_thread(self, thread_id: str) -> list[StoredMessage]:
        rows = self._messages.query_entities("PartitionKey eq @t", parameters={"t": thread_id})
        # Graph's timestamps have one-second precision: within a second, a reply follows what it replies to
        # (its conversation depth), then the order of storing.
        ordered = sorted(rows, key=lambda e: (utc(e["SentAt"]), int(e.get("Depth") or 0), e.metadata["timestamp"]))
        return [_message(e, self._overflow(e)) for e in ordered]

    def body(self, blob: str) -> str:
        return str(self._bodies.download_blob(blob).readall().decode())

    def attachment(self, blob: str) -> bytes:
        return bytes(self._attachments.download_blob(blob).readall())

    def record_skip(self, skip: SkipRecord) -> None:
        self._skips.upsert_entity(
            {
                "PartitionKey": skip.user_id,
                "RowKey": key_of(skip.connection_id + skip.internet_message_id),
                "ThreadId": skip.thread_id,
                "ConnectionId": skip.connection_id,
                "InternetMessageId": clip(skip.internet_message_id, SUBJECT_UNITS),
                "Direction": skip.direction.value,
                "Reason": skip.reason,
                "Details": _bounded_details(skip.details),
                "Subject": clip(skip.subject, SUBJECT_UNITS),
                "At": skip.at,
            }
        )

    def forget_skip(self, user_id: str, connection_id: str, internet_message_id: str) -> None:
        """The message synced after all (replayed by an operator, or met again by a catch-up): no longer skipped."""
        with contextlib.suppress(ResourceNotFoundError):
            self._skips.delete_entity(user_id, key_of(connection_id + internet_message_id))

    def skips_for_user(self, user_id: str) -> list[SkipRecord]:
        rows = self._skips.query_entities("PartitionKey eq @u", parameters={"u": user_id})
        return sorted((_skip_record(e) for e in rows), key=lambda s: s.at)

    def skip_pages(self, since: dt.datetime | None = None, page_size: int = 1000) -> Iterator[list[SkipRecord]]:
        """Every user's skips recorded since ``since``, a page at a time: a whole-table scan, for operators' tools
        only. The subject is not read (their records' ``subject`` is empty)."""
        columns = list(_SKIP_SUMMARY)
        rows = (
            self._skips.query_entities(
                "At ge @since", parameters={"since": since}, select=columns, results_per_page=page_size
            )
            if since
            else self._skips.list_entities(select=columns, results_per_page=page_size)
        )
        for page in rows.by_page():
            yield [_skip_record(e) for e in page]


# A skip row without its subject (up to 32K characters, and never shown to operators).
_SKIP_SUMMARY = (
    "PartitionKey", "ThreadId", "ConnectionId", "InternetMessageId", "Direction", "Reason", "Details", "At",
)  # fmt: skip


def _skip_record(e: dict[str, Any]) -> SkipRecord:
    return SkipRecord(
        user_id=e["PartitionKey"],
        thread_id=e["ThreadId"],
        connection_id=e["ConnectionId"],
        internet_message_id=e["InternetMessageId"],
        direction=Direction(e["Direction"]),
        reason=e["Reason"],
        details=tuple(json.loads(e.get("Details") or "[]")),
        subject=e.get("Subject", ""),
        at=utc(e["At"]),
    )
