"""The inbound worker: one notified message -> fetch, match, cap, store (or record why not).

Graph requests per message: one GET (with ``$select`` and the attachments' metadata expanded), then one
``$value`` per attachment that is stored. Idempotent: a message already stored in its thread (the
Enrollio-sent original, its Sent Items copy, a redelivered notification) is recognised before any attachment
is downloaded. Order of writes: attachment blobs, body blob, then the row, so a row never points at a
missing blob. Transient errors raise (the queue retries); a lost grant marks the connection, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from sync_core.adapters.graph import GraphClient, GraphError, TokenUnavailable
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.connections import Connection
from sync_core.failures import Permanent, malformed
from sync_core.graph_models import ATTACHMENTS_EXPAND, MESSAGE_SELECT, GraphAttachment, GraphMessage
from sync_core.mailbox import mark_grant_lost
from sync_core.matching import Ignore, Skip, ThreadRef, decide
from sync_core.services import Services
from sync_core.threads import SkipRecord, StoredAttachment, StoredMessage

log = logging.getLogger(__name__)


class MessageRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user_id: str
    connection_id: str
    message_id: str
    subscription_id: str = ""
    change_type: str = "created"


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    IGNORED = "ignored"
    GONE = "gone"  # deleted before we fetched it
    NOT_SYNCING = "not_syncing"  # unknown or disconnected connection (R8)
    NEEDS_RECONNECT = "needs_reconnect"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    thread_id: str | None = None
    detail: str = ""


def _thread_refs(
    message: GraphMessage, connection: Connection, threads: ThreadStore
) -> tuple[ThreadRef | None, ThreadRef | None]:
    mail = message.to_mail_message()
    by_ids = threads.by_message_ids(connection, mail.referenced_ids)

    def ref(thread_id: str | None) -> ThreadRef | None:
        thread = threads.get(thread_id) if thread_id else None
        if thread is None:
            return None
        known = frozenset(mid for mid, tid in by_ids.items() if tid == thread.thread_id)
        return ThreadRef(thread.thread_id, thread.contact.email, known)

    by_conversation = ref(threads.by_conversation(connection, mail.conversation_id))
    by_reference = ref(next(iter(by_ids.values()), None))
    return by_conversation, by_reference


def _fetch_attachment(graph: GraphClient, base: str, attachment: GraphAttachment) -> bytes | str:
    """Bytes of a file/item attachment (``$value``), or the link of a reference attachment."""
    if attachment.kind == "reference":
        meta = graph.get_json(f"{base}/attachments/{attachment.id}")
        return str(meta.get("sourceUrl") or "")
    return graph.request("GET", f"{base}/attachments/{attachment.id}/$value").content


def sync_message(ref: MessageRef, services: Services) -> Result:
    connection = services.connections.get(ref.user_id, ref.connection_id)
    if connection is None or not connection.syncs:
        return Result(Outcome.NOT_SYNCING)
    graph = services.graph_for(connection)
    base = f"/users/{connection.user_object_id}/messages/{ref.message_id}"
    try:
        raw = graph.get_json(base, params={"$select": MESSAGE_SELECT, "$expand": ATTACHMENTS_EXPAND})
    except GraphError as exc:
        if exc.status == 404:
            log.info("message %s was gone before it could be fetched", ref.message_id)
            return Result(Outcome.GONE)
        raise
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        return Result(Outcome.NEEDS_RECONNECT, detail=str(exc))
    try:
        message = GraphMessage.model_validate(raw)
    except ValidationError as exc:  # Graph will answer the same way next time
        raise Permanent("unreadable_message", str(malformed(exc, "Graph message"))) from None
    threads = ThreadStore(services.storage.tables)
    messages = MessageStore(services.storage.tables, services.storage.blobs)
    by_conversation, by_reference = _thread_refs(message, connection, threads)
    mail = message.to_mail_message()
    decision = decide(mail, connection.address, by_conversation, by_reference, services.settings.attachment_cap_bytes)
    if isinstance(decision, Ignore):
        return Result(Outcome.IGNORED, detail=decision.reason)  # R4: nothing of it is stored
    if messages.has(decision.thread_id, mail.internet_message_id):
        return Result(Outcome.DUPLICATE, decision.thread_id)
    if isinstance(decision, Skip):
        messages.record_skip(
            SkipRecord(
                user_id=connection.user_id,
                thread_id=decision.thread_id,
                connection_id=connection.connection_id,
                internet_message_id=mail.internet_message_id,
                direction=decision.direction,
                reason=decision.reason,
                details=decision.details,
                subject=mail.subject,
                at=services.clock.now(),
            )
        )
        return Result(Outcome.SKIPPED, decision.thread_id, decision.reason)

    stored_attachments = []
    for index, attachment in enumerate(message.attachments):
        content = _fetch_attachment(graph, base, attachment)
        meta = StoredAttachment(
            attachment.name,
            attachment.size,
            attachment.contentType or "",
            attachment.isInline,
            content_id=attachment.contentId,
        )
        if isinstance(content, str):
            stored_attachments.append(replace(meta, link=content))
        else:
            blob = messages.put_attachment(decision.thread_id, mail.internet_message_id, index, content)
            stored_attachments.append(replace(meta, size=len(content), blob=blob))
    body_blob = messages.put_body(
        decision.thread_id, mail.internet_message_id, message.body.content, message.body.contentType
    )
    inserted = messages.insert(
        StoredMessage(
            thread_id=decision.thread_id,
            internet_message_id=mail.internet_message_id,
            graph_id=message.id,
            direction=decision.direction,
            from_address=mail.from_address,
            to=message.addresses(message.toRecipients),
            cc=message.addresses(message.ccRecipients),
            subject=mail.subject,
            sent_at=message.sent_at,
            body_blob=body_blob,
            body_content_type=message.body.contentType,
            attachments=tuple(stored_attachments),
            depth=message.depth,
        )
    )
    threads.add_keys(
        connection.connection_id,
        decision.thread_id,
        [decision.new_alias] if decision.new_alias else [],
        [mail.internet_message_id],
    )
    threads.set_latest(decision.thread_id, message.id)
    return Result(Outcome.STORED if inserted else Outcome.DUPLICATE, decision.thread_id)
