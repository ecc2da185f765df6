"""One email through Outlook (R6, R3, R8): route it (R7), then the Graph transaction that sends it so its thread
can be tracked.

Create the draft with immutable ids, add the attachments, record the thread and the outbound message, then send.
The draft already carries the conversationId and Message-ID, so the thread is recorded before the send and its
Sent Items copy is later recognised as the same message (CONTRACT.md section 6). If anything fails before Graph
accepted the send, the draft and the records are removed and nothing counts as sent; once Graph may have sent
it, nothing is undone.

A reply answers the thread's newest message that still exists (``createReply``): the one the service saw last,
then the thread's other messages, newest first, since a message deleted in Outlook or moved to the archive
mailbox (its immutable id changes, CONTRACT.md section 4) answers 404. When none is left, the reply is a new
message from MIME, the only way to set ``In-Reply-To``/``References`` (CONTRACT.md sections 4 and 6), naming the
thread's last Message-ID, so the contact's answer still finds the thread.

Attachments under 3 MB are one POST each; larger ones go through an upload session (``send_attachments``,
``adapters/upload.py``). A refusal for size becomes a 413 naming the limit; a broken upload deletes the draft
(no half-sent message) and answers 503 (try again) or 502 (refused), naming the file and the byte it stopped at.

A Graph request is at most 4 MiB (CONTRACT.md section 5): the draft's request (JSON, where each non-ASCII character
of the body is six bytes, ``\\uXXXX``; or base64 MIME, 4/3 of the MIME) is measured before it is sent, and one
over the limit is a 413 naming ``html`` or ``text``, with nothing created at Graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from sync_core import telemetry
from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, TokenUnavailable
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.adapters.upload import UploadClient, UploadInterrupted
from sync_core.connections import Connection
from sync_core.graph_models import conversation_depth
from sync_core.mailbox import mark_grant_lost
from sync_core.matching import Direction
from sync_core.results import Forbidden, Json, NotFound, Problem
from sync_core.routing import route
from sync_core.send_attachments import (
    GRAPH_REQUEST_LIMIT,
    RANGE_BYTES,
    OutgoingAttachment,
    PayloadTooLarge,
    mebibytes,
    outgoing_attachments,
    sent_body,
)
from sync_core.send_reply import mime_reply
from sync_core.send_request import SendRequest
from sync_core.services import Services
from sync_core.subscriptions import parse_iso
from sync_core.threads import Contact, StoredAttachment, StoredMessage, Thread

log = logging.getLogger(__name__)


class Hold(Protocol):
    """The send's hold on its Idempotency-Key (``send.py``): what it writes down, and whether it may go on."""

    def prepare(self, answer: dict[str, Any], draft_path: str, connection_id: str) -> None:
        """Write down the answer and the draft once the draft exists, before anything is sent."""

    def keep(self) -> None:
        """Raise ``SendOutOfTime`` when the call is too near its claim's lease to start another step."""

    def confirm(self) -> None:
        """``keep``, and the key is still this call's (read back): right before Graph is asked to send."""


# Graph's answers that mean "the message is over the mailbox's size limit" (CONTRACT.md section 5).
SIZE_CODES = frozenset({"ErrorMessageSizeExceeded", "ErrorAttachmentSizeLimitExceeded"})
REPLY_ATTEMPTS = 10  # createReply on the newest messages before replying through MIME (each gone one is a 404)


class SendOutcomeUnknown(Problem):
    """Graph may or may not have sent the message (its answer was lost): the key stays claimed until a retry
    can find out, so the message is never sent twice."""

    status = 503


class SendOutOfTime(Problem):
    """The call cannot go on safely (its claim's lease is running out, or a retry took the key over): nothing was
    sent, and the draft is deleted."""

    status = 503
    retry_after = 1.0


class BadGateway(Problem):
    """Graph refused the request (a 4xx other than throttling): its error code is passed on."""

    status = 502


class GraphBusy(Problem):
    """Graph could not take part of the send now (throttled or unavailable past the retry budget)."""

    status = 503


def _recipients(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a}} for a in addresses]


def _body(request: SendRequest) -> dict[str, str]:
    if request.html is not None:
        return {"contentType": "html", "content": request.html}
    return {"contentType": "text", "content": request.text or ""}


def _account_provider(reason: str) -> Json:
    return Json(200, {"route": "account_provider", "reason": reason})


def _refused_for_size(exc: GraphError) -> bool:
    """The tenant's message size limit refused the message (not one request being too big)."""
    return exc.code in SIZE_CODES


def _request_too_large(exc: GraphError) -> bool:
    """Graph refused one request as too big (a 413, or 400 "Maximum request length exceeded.", CONTRACT.md
    section 5): the request's size, not the tenant's limit."""
    return exc.status == 413 or "maximum request length" in exc.message.lower()


def request_limit_problem(what: str, field: str, size: int | None = None) -> PayloadTooLarge:
    measured = f" is {size} bytes" if size is not None else " was refused as too large"
    return PayloadTooLarge(
        f"the request to Microsoft Graph carrying {what}{measured}; Graph takes at most {GRAPH_REQUEST_LIMIT} bytes "
        f"({mebibytes(GRAPH_REQUEST_LIMIT)}) in one request (as JSON each non-ASCII character takes 6 bytes, as "
        "MIME the text is encoded twice); nothing was sent",
        fields=[{"field": field, "limit": str(GRAPH_REQUEST_LIMIT), **({"size": str(size)} if size else {})}],
    )


def too_large_for_graph(exc: GraphError, limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Microsoft 365 refused {what} as larger than the mailbox's message size limit ({exc.code}); nothing was "
        f"sent. This service allows {limit} bytes (MAX_MESSAGE_BYTES): the tenant's limit is lower",
        fields=[{"field": "attachments", "limit": str(limit), "graph_code": exc.code}],
    )


class OutlookSend:
    """One send through Outlook, with the clean-up that undoes it if it fails before Graph accepts it."""

    def __init__(
        self, request: SendRequest, connection: Connection, thread: Thread | None, services: Services, hold: Hold
    ):
        self.request, self.connection, self.thread, self.services = request, connection, thread, services
        self.hold = hold
        self.graph: GraphClient = services.graph_for(connection)
        self.uploads: UploadClient = services.uploads_for(connection)
        self.base = f"/users/{connection.user_object_id}"
        self.threads = ThreadStore(services.storage.tables)
        self.messages = MessageStore(services.storage.tables, services.storage.blobs)
        self.thread_id = thread.thread_id if thread else uuid.uuid4().hex
        self.draft_id: str | None = None
        self.created_thread_id: str | None = None
        self.recorded: tuple[str, str] | None = None  # (thread id, Message-ID) of the outbound row
        self.upload_url: str | None = None  # an upload session in progress (cancelled by undo)
        self.sent = False  # once Graph accepted the send, nothing may be undone

    # -- the draft ------------------------------------------------------------------------------------------------
    def _message(self) -> dict[str, Any]:
        return {
            "subject": self.request.subject,
            "body": _body(self.request),
            "toRecipients": _recipients(self.request.recipients),
            "ccRecipients": _recipients(self.request.cc),
            "bccRecipients": _recipients(self.request.bcc),
        }

    def draft(self) -> dict[str, Any]:
        if self.thread is None:
            created = self._post_within_limit(f"{self.base}/messages", self._message())
        else:
            created = self._reply_draft(self.thread)
        self.draft_id = str(created["id"])
        return dict(created)

    def _within_request_limit(self, size: int) -> None:
        """A 413 naming the body's field when the draft's request would be over Graph's 4 MiB."""
        if size > GRAPH_REQUEST_LIMIT:
            field, _ = sent_body(self.request)
            raise request_limit_problem(f"the message's {field}", field, size)

    def _post_within_limit(self, path: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` as JSON (serialised as ``requests`` would), measured first: never sent twice."""
        raw = json.dumps(payload, allow_nan=False).encode()
        self._within_request_limit(len(raw))
        return self.graph.request("POST", path, data=raw, content_type="application/json", repeatable=False).json()

    def _reply_draft(self, thread: Thread) -> Any:
        # createReply keeps the conversation and sets In-Reply-To/References; give message (not comment), never
        # both (CONTRACT.md section 6).
        message = {k: v for k, v in self._message().items() if k != "subject"}
        stored: list[StoredMessage] = []  # the thread's messages, read only once the latest one is gone

        def newest_first() -> Iterator[str]:
            yield thread.latest_graph_id
            stored.extend(self.messages.for_thread(thread.thread_id))
            yield from (m.graph_id for m in reversed(stored))

        tried: set[str] = set()
        for target in newest_first():
            if not target or target in tried:
                continue
            if len(tried) == REPLY_ATTEMPTS:
                break
            tried.add(target)
            try:
                return self._post_within_limit(f"{self.base}/messages/{target}/createReply", {"message": message})
            except GraphError as exc:
                if exc.status != 404:
                    raise
                log.info("thread %s: message %s is gone from the mailbox", thread.thread_id, target)
        return self._mime_reply(thread, [m.internet_message_id for m in stored])

    def _mime_reply(self, thread: Thread, message_ids: list[str]) -> Any:
        """No message of the thread is left in the mailbox: a new message from MIME that names the thread's
        Message-IDs, so replies to it find the thread."""
        mime = mime_reply(self.request, thread.subject, message_ids or [thread.first_message_id])
        self._within_request_limit((len(mime) + 2) // 3 * 4)  # sent as base64 (CONTRACT.md section 6)
        return self.graph.post_mime(f"{self.base}/messages", mime)

    # -- attachments ----------------------------------------------------------------------------------------------
    def attach(self, attachment: OutgoingAttachment) -> None:
        try:
            if attachment.needs_upload_session:
                self._upload(attachment)
            else:
                self.graph.post_json(
                    f"{self.draft_path}/attachments",
                    {
                        "@odata.type": "#microsoft.graph.fileAttachment",
                        "name": attachment.name,
                        "contentType": attachment.content_type,
                        "contentBytes": attachment.base64_text,  # validated base64, sent as it came
                        "isInline": attachment.is_inline,
                        **({"contentId": attachment.content_id} if attachment.content_id else {}),
                    },
                    repeatable=False,  # twice would attach the file twice; an ambiguous failure deletes the draft
                )
        except UploadInterrupted as exc:
            raise self._attachment_failed(attachment, exc.cause, exc.offset) from None
        except GraphError as exc:
            raise self._attachment_failed(attachment, exc, 0) from None

    def _upload(self, attachment: OutgoingAttachment) -> None:
        item: dict[str, Any] = {
            "attachmentType": "file",
            "name": attachment.name,
            "size": attachment.size,
            "contentType": attachment.content_type,
            "isInline": attachment.is_inline,
        }
        if attachment.content_id:
            item["contentId"] = attachment.content_id
        # A second session, if this POST's answer is lost and it is retried, is never used: it only expires.
        session = self.graph.post_json(f"{self.draft_path}/attachments/createUploadSession", {"AttachmentItem": item})
        self.upload_url = str(session["uploadUrl"])
        self.uploads.upload(self.upload_url, attachment.size, attachment.read, RANGE_BYTES, self.hold.keep)
        self.upload_url = None

    def _attachment_failed(self, attachment: OutgoingAttachment, exc: GraphError, offset: int) -> Problem:
        what = f"'{attachment.name}' ({attachment.size} bytes)"
        where = f" at byte {offset}" if attachment.needs_upload_session else ""
        field = {"field": f"attachments.{attachment.index}", "graph_code": exc.code}
        if _refused_for_size(exc):
            return too_large_for_graph(exc, self.services.settings.max_message_bytes, f"the attachment {what}")
        if _request_too_large(exc):
            return request_limit_problem(f"the attachment {what}{where}", f"attachments.{attachment.index}")
        if isinstance(exc, GraphUnavailable):
            busy = GraphBusy(
                f"Microsoft Graph could not take the attachment {what}{where} now ({exc.code}); nothing was sent: "
                "retry later with the same Idempotency-Key",
                fields=[field],
            )
            busy.retry_after = exc.retry_after
            return busy
        return BadGateway(
            f"Microsoft Graph refused the attachment {what}{where}: {exc.code}: {exc.message}; nothing was sent",
            fields=[field],
        )

    # -- records --------------------------------------------------------------------------------------------------
    def record(self, draft: dict[str, Any], attachments: list[OutgoingAttachment]) -> Thread:
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
                a.size,
                a.content_type,
                a.is_inline,
                blob=self.messages.put_attachment(thread.thread_id, imid, a.index, a.read(), a.size),
                content_id=a.content_id,
            )
            for a in attachments
        ]
        body = _body(self.request)
        self.recorded = (thread.thread_id, imid)
        self.messages.insert(
            StoredMessage(
                thread_id=thread.thread_id,
                internet_message_id=imid,
                graph_id=str(draft["id"]),
                correlation_id=telemetry.correlation_id() or "",
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
        if self.upload_url:
            self.uploads.cancel(self.upload_url)
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

    def run(self, attachments: list[OutgoingAttachment]) -> Json:
        draft = self.draft()
        answer = {
            "route": "outlook",
            "thread_id": self.thread_id,
            "message_id": self.draft_id,
            "internet_message_id": draft["internetMessageId"],
            "conversation_id": draft["conversationId"],
            "from": self.connection.address,
        }
        # Written down before anything can be sent: a retry of a call that dies from here on finds this draft.
        self.hold.prepare(answer, self.draft_path, self.connection.connection_id)
        for attachment in attachments:
            self.hold.keep()
            self.attach(attachment)
        thread = self.record(draft, attachments)
        self.hold.confirm()  # nobody took the key over, and there is time for the send to end within the lease
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


def send_once(request: SendRequest, services: Services, hold: Hold) -> Json:
    """Route the request (R7); through Outlook, send it once and answer what Enrollio records."""
    connections = services.connections.for_user(request.user_id)
    thread: Thread | None = None
    thread_connection: Connection | None = None
    if request.thread_id:
        thread = ThreadStore(services.storage.tables).get(request.thread_id)
        if thread is None:
            raise NotFound(f"thread '{request.thread_id}' does not exist", fields=[{"field": "thread_id"}])
        if thread.user_id != request.user_id:
            raise Forbidden(f"thread '{request.thread_id}' belongs to another user", fields=[{"field": "thread_id"}])
        thread_connection = next((c for c in connections if c.connection_id == thread.connection_id), None)
    decided = route(request.kind, connections, request.from_field, thread_connection, is_reply=thread is not None)
    if decided.connection is None:
        return _account_provider(decided.reason)
    attachments = outgoing_attachments(request, services.settings.max_message_bytes)
    sending = OutlookSend(request, decided.connection, thread, services, hold)
    try:
        return sending.run(attachments)
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
        if _refused_for_size(exc):
            raise too_large_for_graph(exc, services.settings.max_message_bytes, "the message") from None
        if _request_too_large(exc):
            raise request_limit_problem("the message", sent_body(request)[0]) from None
        raise BadGateway(
            f"Microsoft Graph refused the send: {exc.code}: {exc.message}", fields=[{"graph_code": exc.code}]
        ) from None
    except Exception:
        sending.undo()
        raise
