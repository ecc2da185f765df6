"""The inbound worker: one notified message -> fetch, match, cap, store (or record why not).

Graph requests per message: one GET (with ``$select`` and the attachments' metadata expanded), then one
``$value`` per attachment that is stored. The user's own message that matches no thread costs one more, the
headers of its MIME (Graph gives none for the Sent Items copy, CONTRACT.md section 4), only when it may be of a
thread: in a thread's conversation, or addressed to a thread's contact (``_may_be_of_a_thread``).
Idempotent: a message already stored in its thread (the Enrollio-sent original, its Sent Items copy, a redelivered
notification) is recognised before any attachment is downloaded. Order of writes: attachment blobs, body blob, then
the row, so a row never points at a missing blob.

Failures (``sync_core.failures``): transient ones raise (the queue retries); a lost grant marks the connection,
once. A permanent one raises too, for the operator's Failures table, and when the message belongs to an Enrollio
thread it first leaves a skip row with the reason the user sees (SPEC: every skipped message has a reason). If
the full GET itself is what Graph refuses, the thread is found with a second, minimal one (``IDENTIFY_SELECT``);
the catch-up goes the same way, though its delta item names the conversation, because the guard also needs the
message's participants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from sync_core import events, telemetry
from sync_core.adapters.graph import GraphError, GraphUnavailable, TokenUnavailable
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.connections import Connection
from sync_core.failures import Permanent, classify, malformed
from sync_core.graph_models import IDENTIFY_SELECT, GraphMessage
from sync_core.mailbox import known_sent_items_folder, mark_grant_lost
from sync_core.matching import (
    SIZE_OVERHEAD_ALLOWANCE,
    Decision,
    Direction,
    Ignore,
    MailMessage,
    Skip,
    Store,
    ThreadRef,
    decide,
    needs_mime_headers,
    too_large_detail,
)
from sync_core.message_reads import attachment_bytes, message_json, mime_threading_ids, reference_link
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
    correlation_id: str | None = None  # the notification's (sync_core.telemetry); a catch-up's own when absent


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


def _drop(_: bytes) -> None:
    """Where the bytes of an attachment that is only measured go."""


class _MessageSync:
    """One message's way through sync; remembers how far it got, so a failure can still say which thread."""

    def __init__(self, ref: MessageRef, connection: Connection, services: Services) -> None:
        self.ref, self.connection, self.services = ref, connection, services
        self.graph = services.graph_for(connection)
        self.base = f"/users/{connection.user_object_id}/messages/{ref.message_id}"
        self.threads = ThreadStore(services.storage.tables)
        self.messages = MessageStore(services.storage.tables, services.storage.blobs)
        self.mail: MailMessage | None = None
        self.decision: Decision | None = None
        self.blobs: list[str] = []  # attachment blobs written for it, removed again if it does not sync
        self.in_known_conversation = False  # its conversationId is one of the connection's threads

    def _decide(self, mail: MailMessage, sent_items: str) -> Decision:
        by_ids = self.threads.by_message_ids(self.connection, mail.referenced_ids)

        def ref(thread_id: str | None) -> ThreadRef | None:
            thread = self.threads.get(thread_id) if thread_id else None
            if thread is None:
                return None
            known = frozenset(mid for mid, tid in by_ids.items() if tid == thread.thread_id)
            return ThreadRef(thread.thread_id, thread.contact.email, known)

        conversation_thread = self.threads.by_conversation(self.connection, mail.conversation_id)
        self.in_known_conversation = conversation_thread is not None
        by_conversation = ref(conversation_thread)
        by_reference = ref(next(iter(by_ids.values()), None))
        cap = self.services.settings.attachment_cap_bytes
        self.mail = mail
        self.decision = decide(
            mail, self.connection.address, by_conversation, by_reference, cap, sent_items, self.connection.sync_from
        )
        return self.decision

    def run(self) -> Result:
        try:
            raw = message_json(self.graph, self.base, self.services.settings.attachment_cap_bytes)
        except GraphError as exc:
            if exc.status == 404:
                log.info("message %s was gone before it could be fetched", self.ref.message_id)
                return Result(Outcome.GONE)
            raise
        try:
            message = GraphMessage.model_validate(raw)
        except ValidationError as exc:  # Graph will answer the same way next time
            raise Permanent("unreadable_message", str(malformed(exc, "Graph message"))) from None
        mail = message.to_mail_message()
        sent_items = (
            known_sent_items_folder(self.connection, self.graph, self.services)
            if mail.parent_folder_id
            else self.connection.sent_items_folder_id
        )
        decision = self._decide(mail, sent_items)
        if needs_mime_headers(mail, decision, self.connection.address, sent_items) and self._may_be_of_a_thread(mail):
            in_reply_to, references = self._mime_threading_ids()
            if in_reply_to or references:
                mail = replace(mail, in_reply_to=in_reply_to, references=references)
                decision = self._decide(mail, sent_items)
        if isinstance(decision, Ignore):
            return Result(Outcome.IGNORED, detail=decision.reason)  # R4: nothing of it is stored
        if self.messages.has(decision.thread_id, mail.internet_message_id):
            return Result(Outcome.DUPLICATE, decision.thread_id)
        try:
            if isinstance(decision, Skip):
                details = decision.details
                if decision.reason == "attachment_too_large":  # R9 names each attachment over the cap
                    details = tuple(self._attachments(mail, decision.thread_id, keep=False)[1])
                self._skip(mail, decision.thread_id, decision.direction, decision.reason, details)
                return Result(Outcome.SKIPPED, decision.thread_id, decision.reason)
            return self._store(message, mail, decision)
        except GraphError as exc:
            if exc.status != 404:
                raise
            # Deleted while its attachments were read (a $value's 404): like a message gone before its GET.
            self.messages.delete_attachments(self.blobs)
            log.info("message %s was gone before its attachments could be read", self.ref.message_id)
            return Result(Outcome.GONE, decision.thread_id)

    def _may_be_of_a_thread(self, mail: MailMessage) -> bool:
        """Whether the user's own unmatched message is worth its MIME (one more request): its conversation is a
        thread's (the guard found neither the contact nor a known Message-ID: a reply to another address of the
        contact, a forward), or it is addressed to a thread's contact (a reply with a changed subject). The user's
        ordinary mail, to anyone else, costs only its GET (make bench)."""
        return self.in_known_conversation or self.threads.knows_contact(self.connection, mail.recipients)

    def _mime_threading_ids(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        try:
            return mime_threading_ids(self.graph, self.base)
        except GraphUnavailable:
            raise  # transient: the whole message is tried again
        except GraphError as exc:  # most such messages are the user's own mail outside Enrollio's threads (R4)
            log.warning("message %s: no MIME headers (%s): matched without them", self.ref.message_id, exc.code)
            return (), ()

    def _attachments(
        self, mail: MailMessage, thread_id: str, *, keep: bool
    ) -> tuple[list[StoredAttachment], list[dict[str, object]]]:
        """Each attachment stored (its blob, or a reference's link) while ``keep``, and what a skip says of those
        over the cap (R9: on the bytes; Graph's ``size`` decides alone only far over). Once one is over the cap,
        nothing more is stored: the rest are only measured where they may be over the cap too."""
        cap = self.services.settings.attachment_cap_bytes
        stored: list[StoredAttachment] = []
        too_large: list[dict[str, object]] = []
        for index, attachment in enumerate(mail.attachments):
            meta = StoredAttachment(
                attachment.name,
                attachment.size,
                attachment.content_type,
                attachment.is_inline,
                content_id=attachment.content_id,
            )
            keeping = keep and not too_large
            if attachment.kind == "reference":  # a link: its size is its metadata's (CONTRACT.md section 5)
                if keeping:
                    stored.append(replace(meta, link=reference_link(self.graph, self.base, attachment)))
                continue
            if attachment.size > cap + SIZE_OVERHEAD_ALLOWANCE:
                too_large.append(too_large_detail(attachment, cap))  # far over: never downloaded
                continue
            if not keeping and attachment.size <= cap:
                continue  # its bytes are fewer than Graph's size: within the cap, nothing to tell
            writer = self.messages.attachment_writer(thread_id, mail.internet_message_id, index) if keeping else None
            measured = attachment_bytes(self.graph, self.base, attachment, cap, writer.write if writer else _drop)
            if measured.size > cap:  # R9 on the bytes: over the cap, whatever Graph's size said
                too_large.append(too_large_detail(attachment, cap, measured.size, measured.complete))
            elif writer is not None:
                self.blobs.append(writer.commit())
                stored.append(replace(meta, size=measured.size, blob=writer.name))
        return stored, too_large

    def _store(self, message: GraphMessage, mail: MailMessage, decision: Store) -> Result:
        stored, too_large = self._attachments(mail, decision.thread_id, keep=True)
        if too_large:
            self.messages.delete_attachments(self.blobs)
            self._skip(mail, decision.thread_id, decision.direction, "attachment_too_large", tuple(too_large))
            return Result(Outcome.SKIPPED, decision.thread_id, "attachment_too_large")
        body_blob = self.messages.put_body(
            decision.thread_id, mail.internet_message_id, message.body.content, message.body.contentType
        )
        now = self.services.clock.now()
        synced = events.message_synced(
            self.connection,
            decision.thread_id,
            mail.internet_message_id,
            decision.direction.value,
            [a.size for a in stored if a.blob],
            now,
        )
        with events.recorded(self.services, synced) as announcement:
            inserted = self.messages.insert(
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
                    attachments=tuple(stored),
                    depth=message.depth,
                    correlation_id=telemetry.correlation_id() or "",
                )
            )
            if not inserted:
                announcement.nothing_new()
        if inserted:
            telemetry.end_to_end_lag.record(max(0.0, (now - message.sent_at).total_seconds()))
        self.threads.add_keys(
            self.connection.connection_id,
            decision.thread_id,
            [decision.new_alias] if decision.new_alias else [],
            [mail.internet_message_id],
        )
        self.threads.set_latest(decision.thread_id, message.id)
        if inserted:  # a skip row from an earlier attempt (a permanent failure since fixed) no longer holds
            self.messages.forget_skip(self.connection.user_id, self.connection.connection_id, mail.internet_message_id)
        return Result(Outcome.STORED if inserted else Outcome.DUPLICATE, decision.thread_id)

    def _skip(
        self,
        mail: MailMessage,
        thread_id: str,
        direction: Direction,
        reason: str,
        details: tuple[dict[str, object], ...],
    ) -> None:
        imid, at = mail.internet_message_id or self.ref.message_id, self.services.clock.now()
        skipped = events.message_skipped(self.connection, thread_id, imid, direction.value, reason, details, at)
        with events.recorded(self.services, skipped):
            self.messages.record_skip(
                SkipRecord(
                    user_id=self.connection.user_id,
                    thread_id=thread_id,
                    connection_id=self.connection.connection_id,
                    internet_message_id=imid,
                    direction=direction,
                    reason=reason,
                    details=details,
                    subject=mail.subject,
                    at=at,
                )
            )

    def explain(self, failure: Permanent) -> None:
        """Leave a skip row with ``failure``'s reason when the message belongs to an Enrollio thread."""
        if self.decision is None:
            self._identify()
        decision, mail = self.decision, self.mail
        if decision is None or isinstance(decision, Ignore) or mail is None:
            return  # not a message of an Enrollio thread (R4), or one Graph will not describe at all
        if self.messages.has(decision.thread_id, mail.internet_message_id):
            return  # already synced: a later failure does not undo that
        # Nothing of it stays but the skip: attachments, the body and an overflow blob the refused row would name.
        self.messages.discard_blobs(decision.thread_id, mail.internet_message_id)
        self._skip(mail, decision.thread_id, decision.direction, failure.reason, ({"error": failure.detail},))

    def _identify(self) -> None:
        """Which thread the message belongs to, from a minimal GET, when the full one is what Graph refuses."""
        try:
            raw = self.graph.get_json(self.base, params={"$select": IDENTIFY_SELECT})
        except GraphUnavailable:
            raise  # transient: the whole message is tried again
        except GraphError as exc:
            log.warning("message %s: Graph refuses even a minimal GET (%s)", self.ref.message_id, exc.code)
            return
        try:
            mail = GraphMessage.model_validate(raw).to_mail_message()
        except ValidationError:
            return
        self._decide(mail, self.connection.sent_items_folder_id)


def sync_message(ref: MessageRef, services: Services) -> Result:
    """One notified message, in the trace of the notification that named it (its correlation id)."""
    with telemetry.operation("sync message", ref.correlation_id) as span:
        try:
            result = _sync_message(ref, services)
        except Exception as exc:
            telemetry.messages.add(1, {"outcome": "failed", "reason": getattr(classify(exc), "reason", "transient")})
            raise
        span.set_attribute("sync.outcome", result.outcome.value)
        reason = result.detail if result.outcome is Outcome.SKIPPED else ""
        telemetry.messages.add(1, {"outcome": result.outcome.value, "reason": reason})
        log.info("message %s: %s %s", ref.message_id[-12:], result.outcome.value, reason)
        return result


def _sync_message(ref: MessageRef, services: Services) -> Result:
    connection = services.connections.get(ref.user_id, ref.connection_id)
    if connection is None or not connection.syncs:
        return Result(Outcome.NOT_SYNCING)
    sync = _MessageSync(ref, connection, services)
    try:
        return sync.run()
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        return Result(Outcome.NEEDS_RECONNECT, detail=str(exc))
    except Exception as exc:
        failure = classify(exc)
        if not isinstance(failure, Permanent):
            raise
        try:
            sync.explain(failure)
        except TokenUnavailable as lost:
            mark_grant_lost(connection, str(lost), services)
        except Exception as unexplained:
            if not isinstance(classify(unexplained), Permanent):
                raise  # Graph or storage unavailable for now: try the whole message again
            log.warning("message %s: no skip row for %s (%s)", ref.message_id, failure.reason, unexplained)
        raise failure from exc
