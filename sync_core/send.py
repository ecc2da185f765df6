"""``POST /api/send``: route an Enrollio email (R7) and, when it goes through Outlook, send it so its thread
can be tracked (R6, R3, R8), exactly once per Idempotency-Key.

Through Outlook: create the draft (or ``createReply`` on the thread's latest message) with immutable ids, add
the attachments, record the thread and the outbound message, then send. The draft already carries the
conversationId and Message-ID, so the thread is recorded before the send and its Sent Items copy is later
recognised as the same message (CONTRACT.md section 6). If anything fails before Graph accepted the send, the
draft and the records are removed and nothing counts as sent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, TokenUnavailable
from sync_core.adapters.idempotency_store import IdempotencyStore, Recorded
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.connect import mark_grant_lost
from sync_core.connections import Connection
from sync_core.graph_models import conversation_depth
from sync_core.matching import Direction
from sync_core.results import BadRequest, Forbidden, Json, NotFound, Problem, parse_body
from sync_core.routing import Kind, route
from sync_core.services import Services
from sync_core.subscriptions import parse_iso
from sync_core.threads import Contact, StoredAttachment, StoredMessage, Thread

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
WAIT_FOR_FIRST_CALL = 10.0  # seconds a concurrent duplicate waits for the first call's answer
# Longer than any send call can run (host.json functionTimeout is 5 minutes): an older pending claim is orphaned.
CLAIM_LEASE = dt.timedelta(minutes=6)


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    email: str = Field(pattern=EMAIL)
    name: str = ""


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    content_type: str = "application/octet-stream"
    content_base64: str


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    kind: Kind
    from_field: str | None = None
    contact: ContactIn
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    subject: str = ""
    html: str | None = None
    text: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    thread_id: str | None = None

    @model_validator(mode="after")
    def _has_body(self) -> SendRequest:
        if self.html is None and self.text is None:
            raise ValueError("give html or text (or both)")
        return self

    @property
    def recipients(self) -> list[str]:
        return self.to or [self.contact.email]


class PayloadTooLarge(Problem):
    status = 413


class Conflict(Problem):
    status = 409


class SendOutcomeUnknown(Problem):
    """Graph may or may not have sent the message (its answer was lost): the key stays claimed until a retry
    can find out, so the message is never sent twice."""

    status = 503


class BadGateway(Problem):
    """Graph refused the request (a 4xx other than throttling): its error code is passed on."""

    status = 502


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


def parse_request(body: bytes) -> SendRequest:
    return parse_body(SendRequest, body, "send request")


def decode_attachments(request: SendRequest, cap: int) -> list[Attachment]:
    """Decode and cap every attachment before anything reaches Graph (R9: 413 naming the file)."""
    out = []
    for index, item in enumerate(request.attachments):
        try:
            data = base64.b64decode(item.content_base64, validate=True)
        except binascii.Error:
            raise BadRequest(
                f"attachment '{item.name}' is not valid base64",
                fields=[{"field": f"attachments.{index}.content_base64"}],
            ) from None
        if len(data) > cap:
            raise PayloadTooLarge(
                f"attachment '{item.name}' is {len(data)} bytes; the limit is {cap} bytes",
                fields=[{"field": f"attachments.{index}", "name": item.name, "size": str(len(data))}],
            )
        out.append(Attachment(item.name, item.content_type, data))
    return out


def _recipients(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a}} for a in addresses]


def _body(request: SendRequest) -> dict[str, str]:
    if request.html is not None:
        return {"contentType": "html", "content": request.html}
    return {"contentType": "text", "content": request.text or ""}


def _account_provider(reason: str) -> Json:
    return Json(200, {"route": "account_provider", "reason": reason})


class _Sending:
    """One send through Outlook, with the clean-up that undoes it if it fails before Graph accepts it."""

    def __init__(self, request: SendRequest, connection: Connection, thread: Thread | None, services: Services):
        self.request, self.connection, self.thread, self.services = request, connection, thread, services
        self.graph: GraphClient = services.graph_for(connection)
        self.base = f"/users/{connection.user_object_id}"
        self.threads = ThreadStore(services.storage.tables)
        self.messages = MessageStore(services.storage.tables, services.storage.blobs)
        self.thread_id = thread.thread_id if thread else uuid.uuid4().hex
        self.draft_id: str | None = None
        self.created_thread_id: str | None = None
        self.recorded: tuple[str, str] | None = None  # (thread id, Message-ID) of the outbound row
        self.sent = False  # once Graph accepted the send, nothing may be undone

    def draft(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "subject": self.request.subject,
            "body": _body(self.request),
            "toRecipients": _recipients(self.request.recipients),
            "ccRecipients": _recipients(self.request.cc),
            "bccRecipients": _recipients(self.request.bcc),
        }
        if self.thread is not None:
            # createReply keeps the conversation and sets In-Reply-To/References; give message (not comment),
            # never both (CONTRACT.md section 6).
            del message["subject"]
            target = self.thread.latest_graph_id
            created = self.graph.post_json(
                f"{self.base}/messages/{target}/createReply", {"message": message}, repeatable=False
            )
        else:
            created = self.graph.post_json(f"{self.base}/messages", message, repeatable=False)
        self.draft_id = str(created["id"])
        return dict(created)

    def record(self, draft: dict[str, Any], attachments: list[Attachment]) -> Thread:
        now = self.services.clock.now()
        imid = str(draft["internetMessageId"])
        thread = self.thread
        if thread is None:
            thread = Thread(
                thread_id=self.thread_id,
                user_id=self.request.user_id,
                account_id=self.request.account_id,
                connection_id=self.connection.connection_id,
                contact=Contact(self.request.contact.email, self.request.contact.name, self.request.contact.id),
                conversation_id=str(draft["conversationId"]),
                subject=self.request.subject,
                first_message_id=imid,
                created_at=now,
                latest_graph_id=str(draft["id"]),
            )
            self.threads.create(thread)
            self.created_thread_id = thread.thread_id
        stored = [
            StoredAttachment(
                a.name,
                len(a.data),
                a.content_type,
                blob=self.messages.put_attachment(thread.thread_id, imid, i, a.data),
            )
            for i, a in enumerate(attachments)
        ]
        body = _body(self.request)
        self.recorded = (thread.thread_id, imid)
        self.messages.insert(
            StoredMessage(
                thread_id=thread.thread_id,
                internet_message_id=imid,
                graph_id=str(draft["id"]),
                direction=Direction.OUTBOUND,
                from_address=self.connection.address,
                to=tuple(self.request.recipients),
                cc=tuple(self.request.cc),
                subject=str(draft.get("subject") or self.request.subject),
                # Graph's own clock, like every other message of the thread (ordering within the thread).
                sent_at=parse_iso(str(draft["createdDateTime"])) if draft.get("createdDateTime") else now,
                body_blob=self.messages.put_body(thread.thread_id, imid, body["content"], body["contentType"]),
                body_content_type=body["contentType"],
                attachments=tuple(stored),
                origin="enrollio",
                depth=conversation_depth(str(draft.get("conversationIndex") or "")),
            )
        )
        self.threads.add_keys(self.connection.connection_id, thread.thread_id, [str(draft["conversationId"])], [imid])
        return thread

    def undo(self) -> None:
        """Best effort: nothing of a failed send may look sent. Never after Graph accepted it."""
        if self.sent:
            return
        if self.draft_id:
            # A stray draft in Drafts would be harmless (never sent), so a failure here is not an error.
            with contextlib.suppress(GraphError, TokenUnavailable):
                self.graph.request("DELETE", f"{self.base}/messages/{self.draft_id}")
        if self.recorded is not None:
            self.messages.delete(*self.recorded)
        if self.created_thread_id:
            self.threads.delete(self.created_thread_id)

    @property
    def draft_path(self) -> str:
        return f"{self.base}/messages/{self.draft_id}"

    def was_sent(self) -> bool | None:
        """Whether Graph sent the draft (True), did not (False), or cannot tell us now (None)."""
        return was_sent(self.graph, self.draft_path)

    def run(self, attachments: list[Attachment], prepare: Callable[[dict[str, Any], str, str], None]) -> Json:
        draft = self.draft()
        answer = {
            "route": "outlook",
            "thread_id": self.thread_id,
            "message_id": self.draft_id,
            "internet_message_id": draft["internetMessageId"],
            "conversation_id": draft["conversationId"],
            "from": self.connection.address,
        }
        prepare(answer, self.draft_path, self.connection.connection_id)
        for a in attachments:
            self.graph.post_json(
                f"{self.draft_path}/attachments",
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": a.name,
                    "contentType": a.content_type,
                    "contentBytes": base64.b64encode(a.data).decode(),
                },
                repeatable=False,  # twice would attach the file twice; an ambiguous failure deletes the draft
            )
        thread = self.record(draft, attachments)
        try:
            self.graph.request("POST", f"{self.draft_path}/send", repeatable=False)
        except GraphUnavailable as exc:
            # A lost answer may hide a success, and Graph sends asynchronously (the Sent Items copy "may not
            # succeed immediately", CONTRACT.md section 6): a message still reading as a draft proves nothing yet.
            if not exc.ambiguous:
                raise  # refused (429/503 past the budget): not sent
            if not self.was_sent():
                raise SendOutcomeUnknown("Graph's answer to the send was lost; retry with the same key") from None
        self.sent = True
        # Only a sent message becomes the one the next reply answers; failing to note it must not undo the send.
        try:
            self.threads.set_latest(thread.thread_id, str(self.draft_id))
        except AzureError:
            log.warning("thread %s: could not record its latest message", thread.thread_id, exc_info=True)
        return Json(200, answer)


def was_sent(graph: GraphClient, draft_path: str) -> bool | None:
    """Ask Graph whether a draft went out: with immutable ids its id is the Sent Items copy's id."""
    try:
        message = graph.get_json(draft_path, params={"$select": "isDraft"})
    except GraphError as exc:
        return False if exc.status == 404 else None
    except TokenUnavailable:
        return None
    return not message.get("isDraft", True)


def _send_once(request: SendRequest, services: Services, prepare: Callable[[dict[str, Any], str, str], None]) -> Json:
    connections = services.connections.for_user(request.user_id)
    thread: Thread | None = None
    thread_connection: Connection | None = None
    if request.thread_id:
        thread = ThreadStore(services.storage.tables).get(request.thread_id)
        if thread is None:
            raise NotFound(f"thread '{request.thread_id}' does not exist")
        if thread.user_id != request.user_id:
            raise Forbidden(f"thread '{request.thread_id}' belongs to another user")
        thread_connection = next((c for c in connections if c.connection_id == thread.connection_id), None)
    decided = route(request.kind, connections, request.from_field, thread_connection, is_reply=thread is not None)
    if decided.connection is None:
        return _account_provider(decided.reason)
    attachments = decode_attachments(request, services.settings.attachment_cap_bytes)
    sending = _Sending(request, decided.connection, thread, services)
    try:
        return sending.run(attachments, prepare)
    except SendOutcomeUnknown:
        raise  # nothing is undone: the message may be out
    except TokenUnavailable as exc:
        sending.undo()
        mark_grant_lost(decided.connection, str(exc), services)
        return _account_provider("connection_needs_reconnect")
    except GraphUnavailable:
        sending.undo()
        raise
    except GraphError as exc:
        sending.undo()
        raise BadGateway(
            f"Microsoft Graph refused the send: {exc.code}: {exc.message}", fields=[{"graph_code": exc.code}]
        ) from None
    except Exception:
        sending.undo()
        raise


def send(idempotency_key: str | None, body: bytes, services: Services) -> Json:
    """Send at most once per (user, Idempotency-Key); a retry gets the first answer."""
    if not idempotency_key or len(idempotency_key) > 255:
        raise BadRequest(
            f"the {IDEMPOTENCY_HEADER} header is required (1 to 255 characters)", fields=[{"field": IDEMPOTENCY_HEADER}]
        )
    request = parse_request(body)
    body_hash = hashlib.sha256(body).hexdigest()
    keys = IdempotencyStore(services.storage.tables)
    user, key = request.user_id, idempotency_key
    recorded = keys.claim(user, key, body_hash, services.clock.now())
    if recorded is not None:
        return _replay(keys, request, key, body, recorded, services)

    return _run_claimed(keys, request, key, services)


def _run_claimed(keys: IdempotencyStore, request: SendRequest, key: str, services: Services) -> Json:
    """Send for the caller that holds the key's claim, and settle the claim."""
    user = request.user_id

    def prepare(answer: dict[str, Any], draft_path: str, connection_id: str) -> None:
        keys.prepare(user, key, answer, draft_path, connection_id)

    try:
        answer = _send_once(request, services, prepare)
    except SendOutcomeUnknown:
        raise  # the claim stays, with the prepared answer: a retry finds out what happened
    except BaseException:
        keys.release(user, key)
        raise
    # If this write fails, the claim still holds the prepared answer, and a retry resolves it (_resolve).
    keys.complete(user, key, answer.status, answer.body)
    return answer


def _replay(
    keys: IdempotencyStore, request: SendRequest, key: str, body: bytes, recorded: Recorded, services: Services
) -> Json:
    if recorded.body_hash != hashlib.sha256(body).hexdigest():
        raise Conflict(
            f"this {IDEMPOTENCY_HEADER} was used with a different body", fields=[{"field": IDEMPOTENCY_HEADER}]
        )
    deadline = time.monotonic() + WAIT_FOR_FIRST_CALL
    while not recorded.done and time.monotonic() < deadline:
        if recorded.created_at and services.clock.now() - recorded.created_at > CLAIM_LEASE:
            return _resolve(keys, request, key, body, recorded, services)
        time.sleep(0.1)
        recorded = keys.get(request.user_id, key) or recorded
    if not recorded.done:
        raise Conflict(f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later")
    return Json(recorded.status, recorded.answer, headers={"Idempotent-Replayed": "true"})


def _resolve(
    keys: IdempotencyStore, request: SendRequest, key: str, body: bytes, recorded: Recorded, services: Services
) -> Json:
    """A claim older than any call can run: its call died or lost Graph's answer. One retry takes it over
    (a conditional update: concurrent retries cannot both), finds out what happened, and finishes it."""
    user = request.user_id
    if not keys.take_over(user, key, recorded, services.clock.now()):
        raise Conflict(f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later")
    connection = services.connections.get(user, recorded.connection_id) if recorded.connection_id else None
    outcome: bool | None = False
    if recorded.prepared and connection is not None:
        outcome = was_sent(services.graph_for(connection), recorded.draft_path)
    if outcome is None:
        raise SendOutcomeUnknown("Graph cannot say yet whether the earlier call sent the message; retry later")
    if outcome:
        keys.complete(user, key, 200, recorded.prepared)
        return Json(200, recorded.prepared, headers={"Idempotent-Replayed": "true"})
    if recorded.prepared:  # not sent: forget what the dead call recorded, then send afresh
        prepared = recorded.prepared
        if connection is not None:
            with contextlib.suppress(GraphError, TokenUnavailable):
                services.graph_for(connection).request("DELETE", recorded.draft_path)
        MessageStore(services.storage.tables, services.storage.blobs).delete(
            prepared["thread_id"], prepared["internet_message_id"]
        )
        if prepared["thread_id"] != request.thread_id:
            ThreadStore(services.storage.tables).delete(prepared["thread_id"])
    return _run_claimed(keys, request, key, services)
