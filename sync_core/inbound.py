"""The inbound worker: one notified message -> fetch, match, cap, store (or record why not).

Graph requests per message: one GET (with ``$select`` and the attachments' metadata expanded), then one
``$value`` per attachment that is stored. The user's own message that matches no thread costs one more, the
headers of its MIME (Graph gives none for the Sent Items copy, CONTRACT.md section 4), only when it may be of a
thread: in a thread's conversation, or addressed to a thread's contact (``_may_be_of_a_thread``).
A notification names a message of a mailbox, which several users may have connected (R1): it is fetched once, with
any of the mailbox's tokens (``mailbox.MemberTokens``), and decided for each connection that syncs the mailbox, so
a mailbox shared by two users costs Graph what it would for one. A catch-up names a message for one connection.
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
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sync_core import events, telemetry
from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, TokenUnavailable
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.connections import Connection
from sync_core.failures import Permanent, Transient, classify, malformed
from sync_core.graph_models import IDENTIFY_SELECT, GraphMessage
from sync_core.mailbox import known_sent_items_folder, mailbox_graph, mark_grant_lost, syncing_members
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
from sync_core.threads import SkipRecord, StoredAttachment, StoredMessage, Thread

log = logging.getLogger(__name__)


class MessageRef(BaseModel):
    """A message to sync: of a mailbox, for every connection that syncs it (a notification), or for one connection
    (a catch-up, and references queued before subscriptions were per mailbox)."""

    model_config = ConfigDict(extra="ignore")
    mailbox: str = ""
    user_id: str = ""
    connection_id: str = ""
    message_id: str
    subscription_id: str = ""
    change_type: str = "created"
    correlation_id: str | None = None  # the notification's (sync_core.telemetry); a catch-up's own when absent
    # Unix seconds when Graph first throttled this reference (0: never): a reference throttled for a day is
    # recorded for operators instead of waiting on (``workers.THROTTLED_REPORT_SECONDS``).
    throttled_since: float = 0.0

    @model_validator(mode="after")
    def _names_whose(self) -> Self:
        if not self.mailbox and not (self.user_id and self.connection_id):
            raise ValueError("a reference names its mailbox, or its user_id and connection_id")
        return self


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


# Which of a mailbox's connections' results says most about the message: what was written first, then why not.
_SAYS_MOST = (
    Outcome.STORED,
    Outcome.SKIPPED,
    Outcome.DUPLICATE,
    Outcome.GONE,
    Outcome.NEEDS_RECONNECT,
    Outcome.IGNORED,
    Outcome.NOT_SYNCING,
)


def _drop(_: bytes) -> None:
    """Where the bytes of an attachment that is only measured go."""


class _Fetch:
    """What Graph says of one message, asked once however many connections of its mailbox decide on it: the
    message (None when it is gone), the threading ids of its MIME, and the minimal GET that identifies it when the
    full one is refused. A failure is kept and raised again to the next connection."""

    def __init__(self, graph: GraphClient, user_object_id: str, message_id: str, cap: int) -> None:
        self.graph = graph
        self.base = f"/users/{user_object_id}/messages/{message_id}"
        self._cap = cap
        self._answers: dict[str, Any] = {}

    def _once(self, what: str, ask: Any) -> Any:
        if what not in self._answers:
            try:
                self._answers[what] = (ask(), None)
            except GraphUnavailable:
                raise  # transient: asked again on the next try
            except Exception as exc:
                self._answers[what] = (None, exc)
        answer, failure = self._answers[what]
        if failure is not None:
            raise failure
        return answer

    def message(self) -> GraphMessage | None:
        def ask() -> GraphMessage | None:
            try:
                raw = message_json(self.graph, self.base, self._cap)
            except GraphError as exc:
                if exc.status == 404:
                    return None
                raise
            try:
                return GraphMessage.model_validate(raw)
            except ValidationError as exc:  # Graph will answer the same way next time
                raise Permanent("unreadable_message", str(malformed(exc, "Graph message"))) from None

        found: GraphMessage | None = self._once("message", ask)
        return found

    def mime_threading_ids(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ids: tuple[tuple[str, ...], tuple[str, ...]] = self._once(
            "mime", lambda: mime_threading_ids(self.graph, self.base)
        )
        return ids

    def identifying(self) -> Any:
        return self._once("identify", lambda: self.graph.get_json(self.base, params={"$select": IDENTIFY_SELECT}))


class _MessageSync:
    """One message's way through sync for one connection; remembers how far it got, so a failure can still say
    which thread."""

    def __init__(self, ref: MessageRef, connection: Connection, services: Services, fetch: _Fetch) -> None:
        self.ref, self.connection, self.services, self.fetch = ref, connection, services, fetch
        self.graph = fetch.graph
        self.base = fetch.base
        self.threads = ThreadStore(services.storage.tables)
        self.messages = MessageStore(services.storage.tables, services.storage.blobs)
        self.mail: MailMessage | None = None
        self.decision: Decision | None = None
        self.blobs: list[str] = []  # attachment blobs written for it, removed again if it does not sync
        self.in_known_conversation = False  # its conversationId is one of the connection's threads

    def _decide(self, mail: MailMessage, sent_items: str) -> Decision:
        by_ids = self.threads.by_message_ids(self.connection, mail.referenced_ids)
        read: dict[str, Thread | None] = {}  # by conversation and by reference: most often the same thread

        def ref(thread_id: str | None) -> ThreadRef | None:
            if not thread_id:
                return None
            if thread_id not in read:
                read[thread_id] = self.threads.get(thread_id)
            thread = read[thread_id]
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
        message = self.fetch.message()
        if message is None:
            log.info("message %s was gone before it could be fetched", self.ref.message_id)
            return Result(Outcome.GONE)
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
            return self.fetch.mime_threading_ids()
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
            raw = self.fetch.identifying()
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
    throttled: Exception | None = None
    with telemetry.operation("sync message", ref.correlation_id) as span:
        try:
            result = _sync_message(ref, services)
        except Exception as exc:
            failure = classify(exc)
            if not (isinstance(failure, Transient) and failure.throttled):
                telemetry.messages.add(1, {"outcome": "failed", "reason": getattr(failure, "reason", "transient")})
                raise
            # Graph asked the mailbox to wait: not a failure (the reference goes back without counting a try).
            telemetry.messages.add(1, {"outcome": "throttled", "reason": ""})
            span.set_attribute("sync.outcome", "throttled")
            throttled = exc
        else:
            span.set_attribute("sync.outcome", result.outcome.value)
            reason = result.detail if result.outcome is Outcome.SKIPPED else ""
            telemetry.messages.add(1, {"outcome": result.outcome.value, "reason": reason})
            log.info("message %s: %s %s", ref.message_id[-12:], result.outcome.value, reason)
    if throttled is not None:
        raise throttled  # outside the span: a wait is not an error in the trace
    return result


def _sync_message(ref: MessageRef, services: Services) -> Result:
    if ref.mailbox:
        return _sync_for_mailbox(ref, services)
    connection = services.connections.get(ref.user_id, ref.connection_id)
    if connection is None or not connection.syncs:
        return Result(Outcome.NOT_SYNCING)
    cap = services.settings.attachment_cap_bytes
    fetch = _Fetch(services.graph_for(connection), connection.user_object_id, ref.message_id, cap)
    try:
        return _sync_for(connection, ref, fetch, services)
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        return Result(Outcome.NEEDS_RECONNECT, detail=str(exc))


def _sync_for_mailbox(ref: MessageRef, services: Services) -> Result:
    """The message for each connection that syncs its mailbox, fetched once with whichever of their grants holds
    (each one found lost is marked on the way). A permanent failure for one connection leaves its skip row and the
    others still decide; it is raised at the end, for the Failures table."""
    connections = syncing_members(ref.mailbox, services)
    if not connections:
        return Result(Outcome.NOT_SYNCING)
    graph, _ = mailbox_graph(connections, services)
    fetch = _Fetch(graph, connections[0].user_object_id, ref.message_id, services.settings.attachment_cap_bytes)
    results: list[Result] = []
    failures: list[Permanent] = []
    try:
        for connection in connections:
            try:
                results.append(_sync_for(connection, ref, fetch, services))
            except Permanent as failure:
                failures.append(failure)
    except TokenUnavailable as exc:  # every connection of the mailbox has lost its grant, and is marked so
        return Result(Outcome.NEEDS_RECONNECT, detail=str(exc))
    if failures:
        raise failures[0]
    result = min(results, key=lambda r: _SAYS_MOST.index(r.outcome))
    if len(results) > 1:
        result = replace(result, detail=f"{result.detail} (of {len(results)} connections)".strip())
    return result


def _sync_for(connection: Connection, ref: MessageRef, fetch: _Fetch, services: Services) -> Result:
    """The message for one connection; a permanent failure leaves a skip row (when the message is of one of its
    threads) and is raised as ``Permanent``; ``TokenUnavailable`` and transient failures are raised as they are."""
    sync = _MessageSync(ref, connection, services, fetch)
    try:
        return sync.run()
    except TokenUnavailable:
        raise
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
