"""Rows within Azure Tables' limits by construction, checked against real Azurite; and what a refusal becomes.

Azure: a string property holds 64 KiB (UTF-16), an entity 1 MiB (sync_core.table_limits). Azurite refuses the
first but not the second, so the entity size is measured here with Azure's own formula, not left to Azurite.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore
from sync_core.adapters.storage import StorageClients
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.connections import GraphIdentity, on_connected, on_grant_lost
from sync_core.failures import Permanent, classify
from sync_core.matching import Direction
from sync_core.send_request import MAX_ADDRESS, MAX_NAME, MAX_SUBJECT
from sync_core.table_limits import STRING_UNITS, utf16_units
from sync_core.threads import Contact, SkipRecord, StoredAttachment, StoredMessage, Thread

MIB = 1024 * 1024
T = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)


def entity_bytes(entity: dict[str, Any]) -> int:
    """Azure's estimate of an entity's size: 4 bytes + 2 per key character + per property 8 bytes, 2 per name
    character and the value (a string: 4 + 2 per UTF-16 unit; a date or number: 8)
    (learn.microsoft.com/archive/blogs/avkashchauhan/how-the-size-of-an-entity-is-caclulated-in-windows-azure-table-storage)."""
    size = 4 + 2 * (utf16_units(entity["PartitionKey"]) + utf16_units(entity["RowKey"]))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        size += 8 + 2 * len(name) + (4 + 2 * utf16_units(value) if isinstance(value, str) else 8)
    return size


def test_azurite_refuses_a_string_over_64_kib_and_that_is_unstorable_not_transient(storage: StorageClients) -> None:
    table = storage.tables.get_table_client(names.TABLE_MESSAGES)
    with pytest.raises(HttpResponseError) as refused:
        table.create_entity({"PartitionKey": uuid.uuid4().hex, "RowKey": "r", "Subject": "x" * 40_000})
    failure = classify(refused.value)
    assert isinstance(failure, Permanent)
    assert (failure.reason, failure.detail) == ("unstorable", "storage answered 400 PropertyValueTooLarge")


def hostile_message(thread_id: str) -> StoredMessage:
    return StoredMessage(
        thread_id=thread_id,
        internet_message_id=f"<{uuid.uuid4().hex}@home.example>",
        graph_id="AAkALg-hostile",
        direction=Direction.INBOUND,
        from_address="parent@home.example",
        to=tuple(f"parent{i:04d}@families.example" for i in range(3000)),
        cc=tuple(f"grand.parent{i:04d}@families.example" for i in range(3000)),
        subject="RE: " + "🎻 violin lesson " * 3000,  # 51,000 UTF-16 units, beyond the BMP too
        sent_at=dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC),
        body_blob=f"{thread_id}/body.html",
        body_content_type="html",
        attachments=tuple(
            # every other one an inline image with its Content-ID: that field too survives the overflow blob
            StoredAttachment(f"scan {i} {'x' * 200}.pdf", 1000, "image/png", True, content_id=f"scan{i}@enrollio")
            if i % 2
            else StoredAttachment(f"scan {i} {'x' * 200}.pdf", 1000, "application/pdf")
            for i in range(400)
        ),
    )


def test_a_hostile_message_row_stays_within_azures_limits_and_reads_back_whole(storage: StorageClients) -> None:
    messages = MessageStore(storage.tables, storage.blobs)
    message = hostile_message(f"thread-{uuid.uuid4().hex}")
    assert messages.insert(message)
    [row] = storage.tables.get_table_client(names.TABLE_MESSAGES).query_entities(
        "PartitionKey eq @t", parameters={"t": message.thread_id}
    )
    entity = dict(row)
    assert entity_bytes(entity) < MIB // 4  # far below 1 MiB, whatever the message brought
    assert all(utf16_units(v) <= STRING_UNITS for v in entity.values() if isinstance(v, str))
    assert entity["Subject"].endswith(" [...]") and entity["Overflow"]
    [read] = messages.for_thread(message.thread_id)
    assert (read.subject, read.to, read.cc, read.attachments) == (
        message.subject,
        message.to,
        message.cc,
        message.attachments,
    )


def test_an_ordinary_message_row_keeps_everything_in_the_row(storage: StorageClients) -> None:
    messages = MessageStore(storage.tables, storage.blobs)
    message = hostile_message(f"thread-{uuid.uuid4().hex}")
    ordinary = StoredMessage(**{**message.__dict__, "to": ("a@x.example",), "cc": (), "subject": "RE: Trial"})
    ordinary = StoredMessage(**{**ordinary.__dict__, "attachments": ()})
    assert messages.insert(ordinary)
    [row] = storage.tables.get_table_client(names.TABLE_MESSAGES).query_entities(
        "PartitionKey eq @t", parameters={"t": ordinary.thread_id}
    )
    assert (row["Subject"], row["To"], row["Overflow"]) == ("RE: Trial", '["a@x.example"]', "")
    assert messages.for_thread(ordinary.thread_id) == [ordinary]


def test_a_skip_row_stays_within_the_limits_too(storage: StorageClients) -> None:
    messages = MessageStore(storage.tables, storage.blobs)
    user = f"user-{uuid.uuid4().hex}"
    details = tuple({"name": f"video {i} {'y' * 300}.mp4", "size": 5 * MIB, "cap": 3 * MIB} for i in range(500))
    skip = SkipRecord(user, "t1", "c1", "<m@x>", Direction.INBOUND, "attachment_too_large", details, "x" * 40_000, T)
    messages.record_skip(skip)
    [row] = storage.tables.get_table_client(names.TABLE_SKIPS).query_entities(
        "PartitionKey eq @u", parameters={"u": user}
    )
    assert entity_bytes(dict(row)) < MIB // 4
    [read] = messages.skips_for_user(user)
    assert read.subject.startswith("x" * 1000) and read.subject.endswith(" [...]")
    *shown, more = read.details
    assert shown == list(details[: len(shown)]) and more == {"more": len(details) - len(shown)} and shown


def test_a_thread_row_at_the_longest_a_send_admits_fits(storage: StorageClients) -> None:
    """The Threads row holds what Enrollio's send request gave: each field bounded by the request model (issue 12:
    subject 998 characters, names 256, ids 256, addresses 254), here at their longest, beyond the BMP."""
    thread = Thread(
        thread_id=f"thread-{uuid.uuid4().hex}",
        user_id="u" * 256,
        account_id="a" * 256,
        connection_id="c" * 32,
        contact=Contact("p" * (MAX_ADDRESS - 13) + "@home.example", "🎻" * MAX_NAME, "i" * 256),
        conversation_id="AAQkAGI2" + "x" * 100,
        subject="🎻" * MAX_SUBJECT,
        first_message_id=f"<{'m' * 200}@school.example>",
        created_at=T,
    )
    ThreadStore(storage.tables).create(thread)
    row = dict(storage.tables.get_table_client(names.TABLE_THREADS).get_entity(thread.thread_id, ""))
    assert entity_bytes(row) < MIB // 64
    assert ThreadStore(storage.tables).get(thread.thread_id) == thread


def test_a_connections_status_reason_is_kept_within_a_property(storage: StorageClients) -> None:
    """The reason a grant was lost is the identity platform's error text: shown to the user, and clipped to fit."""
    who = GraphIdentity("tenant", f"oid-{uuid.uuid4().hex}", "teacher@school.example", "oid.tenant")
    [connection] = on_connected([], f"user-{uuid.uuid4().hex}", "acct", who, T)
    lost = on_grant_lost(connection, "AADSTS70000: " + "the grant was revoked. " * 3000, T)  # 69,000 characters
    store = ConnectionStore(storage.tables)
    store.save([lost])
    read = store.get(lost.user_id, lost.connection_id)
    assert read is not None
    assert read.status_reason.startswith("AADSTS70000: the grant was revoked.")
    assert read.status_reason.endswith(" [...]") and utf16_units(read.status_reason) <= STRING_UNITS


def test_deleting_a_message_removes_its_row_body_overflow_and_attachment_blobs(storage: StorageClients) -> None:
    """A send that did not happen is undone whole (send.py, send_outlook.py call this): no blob outlives its row."""
    messages = MessageStore(storage.tables, storage.blobs)
    thread_id = f"thread-{uuid.uuid4().hex}"
    message = hostile_message(thread_id)  # its subject and lists need the overflow blob
    body = messages.put_body(thread_id, message.internet_message_id, "<p>hello</p>", "html")
    attachment = messages.put_attachment(thread_id, message.internet_message_id, 0, b"%PDF-1.7")
    assert messages.insert(StoredMessage(**{**message.__dict__, "body_blob": body}))
    kept = messages.put_body(thread_id, "<another@home.example>", "<p>another</p>", "html")  # another message's

    def blobs() -> list[str]:
        containers = (names.CONTAINER_BODIES, names.CONTAINER_ATTACHMENTS)
        found = (storage.blobs.get_container_client(c).list_blobs(name_starts_with=thread_id) for c in containers)
        return sorted(b.name for listing in found for b in listing)

    assert len(blobs()) == 4 and attachment in blobs()  # body, overflow, attachment, the other body
    messages.delete(thread_id, message.internet_message_id)
    assert messages.for_thread(thread_id) == []
    assert blobs() == [kept]
