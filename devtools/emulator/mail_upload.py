"""Upload sessions for large attachments (CONTRACT.md section 5), and the tenant's message size limit.

``POST …/messages/{id}/attachments/createUploadSession`` with ``{"AttachmentItem": {"attachmentType": "file",
"name", "size", "contentType"?, "isInline"?, "contentId"?}}`` answers 201 with an ``uploadSession``
(``uploadUrl``, ``expirationDateTime``, ``nextExpectedRanges: ["0-"]``). The upload URL is pre-authenticated:
it is served outside Graph's ``/v1.0`` path, as Exchange serves it on ``outlook.office.com``
(``/api/v2.0/Users('{user}@{tenant}')/Messages('{id}')/AttachmentSessions('{id}')?authtoken=…``), so a client
that sends its bearer token only under the Graph base URL never sends it here. Then:

- ``PUT {uploadUrl}`` with ``Content-Range: bytes {start}-{end}/{total}``, ``Content-Length`` and the bytes, in
  order: an intermediate range answers 200 with ``nextExpectedRanges: ["{next}"]`` (the shape of the documented
  example, its ``ExpirationDateTime`` capitalised as there); the last answers 201 with a ``Location`` header
  naming the new attachment, and the attachment (with ``isInline``/``contentId``) is on the message;
- ``DELETE {uploadUrl}`` cancels the session: 204 (CONTRACT.md section 5, "Cancel the upload session").
Upload requests pass through the emulator's faults as the session's mailbox and app, and are counted in the
request log under ``PUT /api/v2.0/Users/{id}/Messages/{id}/AttachmentSessions/{id}``.

The tenant's message size limit (``max_message_bytes``, Exchange Online's default 35 MB, CONTRACT.md section 5)
applies to every way an attachment is added and to send: refused with 400 ``ErrorMessageSizeExceeded``, "The
message exceeds the maximum supported size." (code and text as reported in microsoftgraph/microsoft-graph-docs
#15579 = microsoft-graph-docs-contrib#2561, where the refusal came part-way through an upload session's PUTs,
the session having been created for the whole size).

Assumptions, where the contract and the docs are silent (each one a choice, not a documented fact):
- A session may be created for 2,097,152 bytes (2 MiB) or more; smaller is 400
  ``ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`` (the code is documented in the large-attachments
  article's "Errors" section as "smaller than 3 MB"; the 2 MiB threshold is the one measured in
  microsoftgraph/msgraph-sdk-java#52, and the stricter reading would leave files between the POST limit and
  3 MiB with no way in at all). More than 150 MiB is 400 ``ErrorAttachmentSizeLimitExceeded``.
- A session lives 2 hours (the documented example's session expires 1 h 42 min after its attachment was
  written); the expiry does not move with each PUT (the large-attachments article: it "remains the same as
  returned by the initial uploadSession"). After it, the URL's token has expired: 401
  ``InvalidAuthenticationToken``. ``POST /_emulator/mail/upload-sessions/expire`` expires every session now.
- A PUT carrying an ``Authorization`` header is 401 (the docs: "Do not specify an Authorization request header";
  a Graph token is for another audience, as in O365/python-o365#1027's audience error); a wrong or missing
  ``authtoken`` is 401 too.
- A range must start at the next expected byte ("You must upload bytes in a file in order"): any other start,
  a repeat included, is 416 ``InvalidRange`` naming the expected byte. A range over 4 MiB ("up to 4 MB each
  time") is 413 ``RequestEntityTooLarge``; a missing or malformed ``Content-Range``, a total that is not the
  session's size, or a ``Content-Length`` that is not the range's length is 400 ``InvalidContentRange``.
- After a size refusal or a cancel the session is gone: its URL answers 404 ``ErrorItemNotFound``.
- The message size counted against the limit is its encoded size, as the contract says Exchange counts it
  (CONTRACT.md section 5): the body's UTF-8 bytes and each attachment's bytes as MIME carries them, base64 in
  lines of 76 characters ending in CRLF (RFC 2045 section 6.8), about 1.37 times the raw bytes. How Exchange
  encodes a body is not documented: base64 is the largest of its choices, so the emulator is never kinder than
  Exchange. Headers are not counted (a few hundred bytes).
- Outlook's upload throttle, "150 MB upload (PATCH/POST/PUT) per 5 minutes" per app and mailbox (CONTRACT.md
  section 8), counts the body of every PATCH, POST and PUT of the mailbox's mail (a draft, an attachment POST,
  a session's range PUTs) against 150,000,000 bytes (the strict reading of "MB"): a request over it is 429 with
  ``Retry-After`` until enough has aged out.
``GET|POST /_emulator/mail/limits`` reads or sets ``{"max_message_bytes": n}``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from devtools.emulator.faults import throttled
from devtools.emulator.mail_store import Attachment, MailboxData, MailError, MailStore, Message, bad_request, new_id
from devtools.emulator.state import Change
from devtools.emulator.web import ROUTE_KEY, Host, Principal, graph_error, json_response

MiB = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 35 * MiB  # Exchange Online's default message size limit (CONTRACT.md section 5)
MIN_SESSION_BYTES = 2 * MiB
MAX_SESSION_BYTES = 150 * MiB
MAX_RANGE_BYTES = 4 * MiB
SESSION_LIFETIME = dt.timedelta(hours=2)
UPLOAD_THROTTLE_BYTES = 150_000_000  # of PATCH/POST/PUT bodies per app and mailbox ...
UPLOAD_THROTTLE_WINDOW = 300.0  # ... per 5 minutes (CONTRACT.md section 8)
PATH_PREFIX = "/api/v2.0/"
_SESSION_PATH = re.compile(r"^/api/v2\.0/Users\('([^']*)'\)/Messages\('([^']*)'\)/AttachmentSessions\('([^']*)'\)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
ROUTE = "/api/v2.0/Users/{id}/Messages/{id}/AttachmentSessions/{id}"
TOO_LARGE = "The message exceeds the maximum supported size."


def encoded_size(raw_bytes: int) -> int:
    """``raw_bytes`` as MIME carries them: base64, in lines of 76 characters ending in CRLF (RFC 2045 6.8)."""
    base64_chars = (raw_bytes + 2) // 3 * 4
    return base64_chars + 2 * ((base64_chars + 75) // 76)


def message_size(message: Message, uploading: int = 0) -> int:
    """The size the tenant's message size limit counts, with ``uploading`` bytes of an attachment on their way
    (the encoded size: see the assumption in the module docstring)."""
    # The attachments' bytes, not Graph's ``size`` (which adds Exchange's overhead, ``mail_store``).
    parts = [len(message.body.encode()), *(len(a.content) for a in message.attachments)]
    return sum(encoded_size(n) for n in parts) + (encoded_size(uploading) if uploading else 0)


def message_too_large() -> MailError:
    return MailError(400, "ErrorMessageSizeExceeded", TOO_LARGE)


@dataclass
class UploadSession:
    id: str
    token: str
    principal: Principal  # who created it: its PUTs count against that app and mailbox
    mailbox_id: str
    message_id: str  # immutable id
    url_message_id: str  # the id form the client used, as it appears in the URL
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: str | None
    expires: dt.datetime
    received: bytearray = field(default_factory=bytearray)


def _attachment_item(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise bad_request("AttachmentItem", "expected a JSON object with AttachmentItem")
    # The docs write the parameter "AttachmentItem"; the SDKs' serialisers write "attachmentItem".
    item = next((v for k, v in payload.items() if k.lower() == "attachmentitem"), None)
    if not isinstance(item, dict):
        raise bad_request("AttachmentItem", "expected an attachmentItem object")
    if str(item.get("attachmentType", "")).lower() != "file":
        raise bad_request("AttachmentItem.attachmentType", "expected file")
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise bad_request("AttachmentItem.name", "expected a file name")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request("AttachmentItem.size", "expected the file's size in bytes")
    if size < MIN_SESSION_BYTES:
        raise MailError(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            f"The attachment size {size} is smaller than the minimum size for an upload session; add it with "
            "a POST to the attachments of the message instead.",
        )
    if size > MAX_SESSION_BYTES:
        raise MailError(
            400, "ErrorAttachmentSizeLimitExceeded", f"The attachment size {size} exceeds the maximum of 150 MB."
        )
    if not isinstance(item.get("isInline", False), bool):
        raise bad_request("AttachmentItem.isInline", "expected true or false")
    content_id = item.get("contentId")
    if content_id is not None and not isinstance(content_id, str):
        raise bad_request("AttachmentItem.contentId", "expected a string")
    return item


class UploadSessions:
    """The sessions of every mailbox, the tenant's size limit, and the PUT/DELETE handlers of upload URLs."""

    def __init__(self, server: Host, store: MailStore) -> None:
        self.server = server
        self.world = server.world
        self.store = store
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self._sessions: dict[str, UploadSession] = {}
        self._uploaded: dict[tuple[str, str], deque[tuple[float, int]]] = {}  # (app, mailbox) -> (when, bytes)

    def check_size(self, message: Message, extra: int = 0) -> None:
        """400 ``ErrorMessageSizeExceeded`` when ``message`` plus an attachment of ``extra`` bytes is over the
        tenant's limit."""
        if message_size(message, extra) > self.max_message_bytes:
            raise message_too_large()

    def upload_throttle(self, principal: Principal, length: int) -> Response | None:
        """Outlook's upload throttle for a PATCH/POST/PUT body of ``length`` bytes by this app to this mailbox: a
        429 with ``Retry-After`` when it would go over, else None (and the bytes are counted)."""
        key = (principal.client_id, principal.mailbox_id)
        now = time.monotonic()
        with self.world.lock:
            recent = self._uploaded.setdefault(key, deque())
            while recent and recent[0][0] <= now - UPLOAD_THROTTLE_WINDOW:
                recent.popleft()
            used = sum(n for _, n in recent)
            if used + length > UPLOAD_THROTTLE_BYTES:
                freed, wait = 0, 0.001
                for at, n in recent:  # wait until enough of the window's bytes have aged out
                    freed += n
                    wait = at + UPLOAD_THROTTLE_WINDOW - now
                    if used - freed + length <= UPLOAD_THROTTLE_BYTES:
                        break
                return throttled(max(wait, 0.001), "150 MB of uploads per 5 minutes per app and mailbox")
            recent.append((now, length))
        return None

    # -- Graph: POST …/messages/{id}/attachments/createUploadSession ---------------------------------------------
    def create(self, box: MailboxData, message: Message, url_id: str, payload: Any, principal: Principal) -> Response:
        item = _attachment_item(payload)
        now = dt.datetime.now(dt.UTC)
        session = UploadSession(
            id=new_id("AAMkADI5MAAIT3k0", 18),
            token=secrets.token_urlsafe(32),
            principal=principal,
            mailbox_id=box.mailbox.id,
            message_id=message.immutable_id,
            url_message_id=url_id,
            name=item["name"],
            size=item["size"],
            content_type=str(item.get("contentType") or "application/octet-stream"),
            is_inline=bool(item.get("isInline", False)),
            content_id=item.get("contentId"),
            expires=now + SESSION_LIFETIME,
        )
        with self.world.lock:
            self._sessions[session.id] = session
        body = {
            "@odata.context": f"{self.server.graph_base_url}/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{self._session_url(session)}?authtoken={session.token}",
            "expirationDateTime": _iso7(session.expires),
            "nextExpectedRanges": ["0-"],
        }
        return json_response(body, 201)

    def _session_url(self, session: UploadSession) -> str:
        user = f"{session.mailbox_id}@{self.world.tenant_id}"
        return (
            f"{self.server.base_url}/api/v2.0/Users('{user}')/Messages('{session.url_message_id}')"
            f"/AttachmentSessions('{session.id}')"
        )

    # -- the upload URL ---------------------------------------------------------------------------------------------
    def principal_of(self, request: Request) -> Principal | None:
        """The app and mailbox an upload request counts against (None for an unknown session)."""
        request.environ[ROUTE_KEY] = f"{request.method} {ROUTE}"  # counted so even when a fault answers it
        match = _SESSION_PATH.match(request.path)
        with self.world.lock:
            session = self._sessions.get(match.group(3)) if match else None
        return session.principal if session else None

    def handle(self, request: Request) -> Response:
        """``PUT`` a range to, or ``DELETE``, the session an upload URL names."""
        request.environ[ROUTE_KEY] = f"{request.method} {ROUTE}"
        try:
            session = self._authorised(request)
            if request.method == "DELETE":
                with self.world.lock:
                    self._sessions.pop(session.id, None)
                return Response(status=204)
            if request.method != "PUT":
                return graph_error(405, "ErrorInvalidRequest", f"The method {request.method} is not allowed here.")
            return self._put(request, session)
        except MailError as err:
            return graph_error(err.status, err.code, err.message)

    def _authorised(self, request: Request) -> UploadSession:
        match = _SESSION_PATH.match(request.path)
        with self.world.lock:
            session = self._sessions.get(match.group(3)) if match else None
        if session is None:
            raise MailError(404, "ErrorItemNotFound", "The upload session was not found (cancelled or finished).")
        if "Authorization" in request.headers:
            raise MailError(
                401,
                "InvalidAuthenticationToken",
                "The upload URL is pre-authenticated: do not send an Authorization header.",
            )
        if not secrets.compare_digest(request.args.get("authtoken", ""), session.token):
            raise MailError(401, "InvalidAuthenticationToken", "The authtoken of the upload URL is not valid.")
        if dt.datetime.now(dt.UTC) >= session.expires:
            raise MailError(401, "InvalidAuthenticationToken", "The upload session's token has expired.")
        return session

    def _put(self, request: Request, session: UploadSession) -> Response:
        match = _CONTENT_RANGE.match(request.headers.get("Content-Range", "").strip())
        if match is None:
            raise MailError(400, "InvalidContentRange", "Content-Range: expected 'bytes {start}-{end}/{total}'.")
        start, end, total = (int(g) for g in match.groups())
        if total != session.size or end < start or end >= total:
            raise MailError(
                400, "InvalidContentRange", f"Content-Range: {start}-{end}/{total} is not a range of {session.size}."
            )
        length = end - start + 1
        if length > MAX_RANGE_BYTES:
            raise MailError(
                413, "RequestEntityTooLarge", f"A range is at most {MAX_RANGE_BYTES} bytes; this one is {length}."
            )
        data = request.get_data(cache=False)
        if request.content_length != length or len(data) != length:
            raise MailError(400, "InvalidContentRange", f"Content-Length must be the range's length ({length}).")
        if start != len(session.received):
            raise MailError(
                416,
                "InvalidRange",
                f"The next expected range starts at byte {len(session.received)}; bytes are uploaded in order.",
            )
        if refusal := self.upload_throttle(session.principal, length):
            return refusal
        with self.world.lock:
            box, message = self._message(session)
            if message_size(message, len(session.received) + length) > self.max_message_bytes:
                self._sessions.pop(session.id, None)
                raise message_too_large()
            session.received += data
            if len(session.received) < session.size:
                body = {
                    "@odata.context": f"{self._session_url(session)}/$entity",
                    "ExpirationDateTime": _iso7(session.expires),
                    "nextExpectedRanges": [str(len(session.received))],
                }
                return json_response(body)
            attachment = Attachment(
                id=new_id("AAMkADI5MAAIT3drCAAABEgAQA", 18),
                kind="file",
                name=session.name,
                content_type=session.content_type,
                content=bytes(session.received),
                is_inline=session.is_inline,
                content_id=session.content_id,
            )
            message.attachments.append(attachment)
            self._sessions.pop(session.id, None)
            changes = box.touch(message)
        self._publish(changes)
        user = f"{session.mailbox_id}@{self.world.tenant_id}"
        location = (
            f"{self.server.base_url}/api/v2.0/Users('{user}')/Messages('{session.url_message_id}')"
            f"/Attachments('{attachment.id}')"
        )
        return Response(status=201, headers={"Location": location, "Content-Length": "0"})

    def _message(self, session: UploadSession) -> tuple[MailboxData, Message]:
        mailbox = self.world.mailbox(session.mailbox_id)
        box = self.store.box(mailbox) if mailbox else None
        message = box.messages.get(session.message_id) if box else None
        if box is None or message is None:
            self._sessions.pop(session.id, None)
            raise MailError(404, "ErrorItemNotFound", "The message of this upload session no longer exists.")
        return box, message

    def _publish(self, changes: list[Change]) -> None:
        for change in changes:
            self.world.publish(change)

    # -- control ----------------------------------------------------------------------------------------------------
    def control(self, request: Request) -> Response | None:
        """``/_emulator/mail/limits`` and ``/_emulator/mail/upload-sessions/expire``, else None."""
        path = request.path.rstrip("/")
        if path == "/_emulator/mail/upload-sessions/expire" and request.method == "POST":
            with self.world.lock:
                for session in self._sessions.values():
                    session.expires = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            return Response(status=204)
        if path != "/_emulator/mail/limits":
            return None
        if request.method == "POST":
            try:
                payload = json.loads(request.get_data() or b"{}")
            except ValueError:
                payload = None
            value = payload.get("max_message_bytes") if isinstance(payload, dict) else None
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < 1
                or set(payload) != {"max_message_bytes"}
            ):
                return graph_error(400, "BadRequest", "max_message_bytes: expected a positive integer")
            self.max_message_bytes = value
        elif request.method != "GET":
            return graph_error(405, "BadRequest", f"{request.method} is not allowed here")
        return json_response({"max_message_bytes": self.max_message_bytes})


def _iso7(moment: dt.datetime) -> str:
    """Graph's seven-digit fractional seconds (``2019-09-25T01:09:30.7671707Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
