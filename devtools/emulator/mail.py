"""Graph v1.0 mail for the emulator: users, messages, attachments, send, replies, delta (CONTRACT.md sections 4-7).

Every route exists as ``/me/...`` and ``/users/{id-or-address}/...``; a delegated token reaches only its own
mailbox, so another mailbox answers 403 ``ErrorAccessDenied``. Folders are addressed by id or well-known name
(``inbox``, ``drafts``, ``sentitems``, ``deleteditems``, ``archive``), also in the OData key form
``mailFolders('Inbox')``. Ids in responses are immutable ids when the request carries
``Prefer: IdType="ImmutableId"``, else REST ids, which change when a message moves (section 4).

Graph routes: ``GET /me``; ``GET|POST …/messages``; ``GET|DELETE …/messages/{id}`` ($select,
$expand=attachments(...); DELETE answers 204, D ``api-reference/v1.0/api/message-delete.md``; where the message
goes is not documented: here it leaves the mailbox's folders, as a soft delete to Recoverable Items would);
``GET …/messages/{id}/$value`` (MIME, ``mail_mime``); list queries with ``$filter``/``$orderby`` (``mail_list``);
``GET|POST …/messages/{id}/attachments``; ``GET …/attachments/{id}`` and ``…/$value``; ``POST …/messages/{id}/send``;
``POST …/messages/{id}/createReply|createReplyAll``; ``POST …/sendMail``; ``GET …/mailFolders/{id}``;
``GET|POST …/mailFolders/{id}/messages``; ``GET …/mailFolders/{id}/messages/delta``;
``POST …/messages/{id}/attachments/createUploadSession`` (the sessions and their upload URLs: ``mail_upload.py``).
A draft may be created from base64 MIME (``Content-Type: text/plain``, CONTRACT.md section 6: ``mail_mime_draft``).
Every request body is limited to 4 MB: over it, 400 ``BadRequest`` "Maximum request length exceeded." (the
maintainer in microsoftgraph/microsoft-graph-docs#85: "there is a 4MB limit on the size of a request"; with
JSON and base64 around it, the largest file one POST can attach is the 3,145,611 bytes measured in
microsoftgraph/msgraph-sdk-java#52). Every PATCH, POST and PUT body counts against Outlook's upload throttle,
150 MB per 5 minutes per app and mailbox (CONTRACT.md section 8, ``mail_upload``). The control endpoints that play
the rest of the mail world are in ``mail_control.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from devtools.emulator import mail_delta, mail_list
from devtools.emulator.mail_compose import attachment_from_json, new_draft, reply_draft
from devtools.emulator.mail_control import MailControl
from devtools.emulator.mail_mime import MIME_TYPE, message_mime
from devtools.emulator.mail_mime_draft import draft_from_mime
from devtools.emulator.mail_render import (
    MESSAGE_SELECTABLE,
    View,
    attachment_json,
    message_json,
    parse_attachment_select,
    parse_expand,
    parse_select,
    user_json,
)
from devtools.emulator.mail_store import Folder, MailboxData, MailError, MailStore, Message, bad_request
from devtools.emulator.mail_transport import send_draft, send_new
from devtools.emulator.mail_upload import UploadSessions
from devtools.emulator.state import Change
from devtools.emulator.web import ROUTE_KEY, Host, Principal, graph_error, json_response

MESSAGE_TYPE = "microsoft.graph.message"
_KEY_SEGMENT = re.compile(r"^([A-Za-z]+)\('([^']*)'\)$")
_ID_AFTER = {"messages", "mailfolders", "attachments"}
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # "a 4MB limit on the size of a request" (see the module docstring)
_CANONICAL = {
    "messages": "messages",
    "mailfolders": "mailFolders",
    "attachments": "attachments",
    "send": "send",
    "createreply": "createReply",
    "createreplyall": "createReplyAll",
    "createuploadsession": "createUploadSession",
    "sendmail": "sendMail",
    "delta": "delta",
    "$value": "$value",
}


def prefers(request: Request) -> dict[str, str]:
    """The request's ``Prefer`` preferences, names lower-cased, values unquoted (several headers allowed)."""
    out = {}
    for header in request.headers.getlist("Prefer"):
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            out[name.strip().lower()] = value.strip().strip('"')
    return out


@dataclass
class Call:
    """One Graph request, resolved to its mailbox and the ids in its path."""

    request: Request
    box: MailboxData
    prefix: str  # "/me" or "/users/{key}", as the client wrote it (links go back the same way)
    ids: list[str]
    view: View
    prefer: dict[str, str]
    principal: Principal | None = None

    def message(self, position: int = 0) -> Message:
        found = self.box.message(self.ids[position])
        if found is None:
            raise MailError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return found

    def folder(self) -> Folder:
        found = self.box.folder(self.ids[0])
        if found is None:
            raise MailError(404, "ErrorItemNotFound", f"The folder '{self.ids[0]}' was not found in the store.")
        return found

    def raw_body(self) -> bytes:
        raw = self.request.get_data()
        if len(raw) > MAX_REQUEST_BYTES:
            raise MailError(400, "BadRequest", "Maximum request length exceeded.")
        return raw

    def json_body(self) -> Any:
        raw = self.raw_body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request("body", "the request body is not valid JSON") from None


Handler = Callable[["MailApi", Call], Response]


class MailApi:
    """The mail half of Graph, over the store on ``world.ext["mail"]``; control endpoints via ``MailControl``."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self.world = server.world
        self.store = MailStore.of(server.world)
        self._control = MailControl(server, self.store)
        self.uploads = UploadSessions(server, self.store)

    def control(self, request: Request) -> Response | None:
        """The ``/_emulator/mailboxes`` and ``/_emulator/mail/...`` control endpoints (see ``mail_control``)."""
        return self.uploads.control(request) or self._control.control(request)

    def graph(self, request: Request, principal: Principal) -> Response | None:
        """Answer a Graph request under ``/v1.0`` this component owns, else None."""
        segments = _segments(request.path)
        if not segments or segments[0].lower() not in {"me", "users"}:
            return None
        if segments[0].lower() == "me":
            user_key, prefix, rest = principal.mailbox_id, "/me", segments[1:]
        elif len(segments) >= 2:
            user_key, prefix, rest = segments[1], f"/users/{segments[1]}", segments[2:]
        else:
            return None
        pattern, ids = _pattern(rest)
        if pattern not in _ROUTES:
            return None
        handler = _ROUTES[pattern].get(request.method)
        shown = "/".join(_CANONICAL.get(p, p) for p in pattern.split("/")) if pattern else ""
        request.environ[ROUTE_KEY] = f"{request.method} {'/me' if prefix == '/me' else '/users/{id}'}" + (
            f"/{shown}" if shown else ""
        )
        if handler is None:
            return graph_error(405, "Request_BadRequest", f"The method {request.method} is not allowed here.")
        try:
            self._check_scopes(request, pattern)
            box = self._mailbox(user_key, principal)
            prefer = prefers(request)
            view = View(
                immutable_ids=prefer.get("idtype", "").lower() == "immutableid",
                text_body=prefer.get("outlook.body-content-type", "").lower() == "text",
            )
            # Outlook's upload throttle counts every PATCH/POST/PUT to the mailbox (CONTRACT.md section 8).
            if request.method in {"PATCH", "POST", "PUT"} and (
                refusal := self.uploads.upload_throttle(principal, len(request.get_data()))
            ):
                return refusal
            return handler(self, Call(request, box, prefix, ids, view, prefer, principal))
        except MailError as err:
            return graph_error(err.status, err.code, err.message)

    def _check_scopes(self, request: Request, pattern: str) -> None:
        # Each API names its least-privileged delegated permissions (the "Permissions" table of its doc page).
        needed = _SCOPES.get((request.method, pattern), _READ)
        if not needed & self.server.identity.scopes(request):
            raise MailError(
                403, "ErrorAccessDenied", f"Access is denied. The token needs one of: {', '.join(sorted(needed))}."
            )

    def _mailbox(self, key: str, principal: Principal) -> MailboxData:
        mailbox = self.world.mailbox(key)
        if mailbox is None and "@" in key and key.split("@", 1)[1] == self.world.tenant_id:
            mailbox = self.world.mailbox(key.split("@", 1)[0])  # the "{user-id}@{tenant-id}" form of resources
        if mailbox is None:
            raise MailError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
        if mailbox.id != principal.mailbox_id:
            # A delegated token reaches only the signed-in user's mailbox (CONTRACT.md section 1.2).
            raise MailError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        with self.world.lock:
            return self.store.box(mailbox)

    def _commit(self, action: Callable[[], list[Change]]) -> None:
        """Run a state change under the world lock, then publish its changes once they are visible."""
        with self.world.lock:
            changes = action()
        for change in changes:
            self.world.publish(change)

    def _context(self, call: Call, tail: str) -> str:
        return f"{self.server.graph_base_url}/$metadata#users('{call.box.mailbox.id}')/{tail}"

    def _message_response(self, call: Call, m: Message, status: int = 200) -> Response:
        with self.world.lock:
            body = {"@odata.context": self._context(call, "messages/$entity"), **message_json(m, call.view, None)}
        return json_response(body, status, self._applied(call))

    def _applied(self, call: Call) -> dict[str, str]:
        return {"Preference-Applied": 'outlook.body-content-type="text"'} if call.view.text_body else {}

    def _link(self, call: Call, path: str, params: dict[str, str]) -> str:
        return f"{self.server.graph_base_url}{call.prefix}/{path}?{urlencode(params, safe='$(),')}"

    # -- handlers ---------------------------------------------------------------------------------------------
    def get_user(self, call: Call) -> Response:
        return json_response(user_json(call.box.mailbox, self.server.graph_base_url))

    def get_folder(self, call: Call) -> Response:
        with self.world.lock:
            folder = call.folder()
            messages = call.box.in_folder(folder.id)
            body = {
                "@odata.context": self._context(call, "mailFolders/$entity"),
                "id": folder.id,
                "displayName": folder.display_name,
                "parentFolderId": None,
                "childFolderCount": 0,
                "unreadItemCount": sum(not m.is_read for m in messages),
                "totalItemCount": len(messages),
                "isHidden": False,
            }
        return json_response(body)

    def get_message(self, call: Call) -> Response:
        select = parse_select(call.request.args.get("$select"), MESSAGE_SELECTABLE, MESSAGE_TYPE)
        expand = parse_expand(call.request.args.get("$expand"))
        with self.world.lock:
            m = call.message()
            tail = f"messages({','.join(select)})/$entity" if select else "messages/$entity"
            body = {"@odata.context": self._context(call, tail), **message_json(m, call.view, select, expand)}
        return json_response(body, headers=self._applied(call))

    def delete_message(self, call: Call) -> Response:
        self._commit(lambda: call.box.delete(call.message()))
        return Response(status=204)

    def message_value(self, call: Call) -> Response:
        """``GET …/messages/{id}/$value``: the message as MIME, headers included (CONTRACT.md section 4)."""
        with self.world.lock:
            mime = message_mime(call.message())
        return Response(mime, status=200, mimetype=MIME_TYPE)

    def list_messages(self, call: Call) -> Response:
        args = call.request.args
        select = parse_select(args.get("$select"), MESSAGE_SELECTABLE, MESSAGE_TYPE)
        top, skip = _int_arg(args.get("$top"), "$top", 10), _int_arg(args.get("$skip"), "$skip", 0, 0, 10**9)
        with self.world.lock:
            folder = call.folder() if call.ids else None
            in_scope = [m for m in call.box.messages.values() if folder is None or m.folder_id == folder.id]
            found = mail_list.select(in_scope, args.get("$filter"), args.get("$orderby"))
            body: dict[str, Any] = {
                "@odata.context": self._context(call, "messages"),
                "value": [message_json(m, call.view, select) for m in found[skip : skip + top]],
            }
        if skip + top < len(found):
            params = {k: v for k, v in args.items() if k != "$skip"} | {"$skip": str(skip + top)}
            path = f"mailFolders/{call.ids[0]}/messages" if call.ids else "messages"
            body["@odata.nextLink"] = self._link(call, path, params)
        return json_response(body, headers=self._applied(call))

    def create_message(self, call: Call) -> Response:
        # "JSON (application/json) or base64 MIME (text/plain)" (CONTRACT.md section 6).
        mime = call.request.mimetype == "text/plain"
        payload = call.raw_body() if mime else call.json_body() or {}
        with self.world.lock:
            folder = call.folder() if call.ids else call.box.well_known("drafts")
            draft = (
                draft_from_mime(call.box, folder, payload)
                if isinstance(payload, bytes)
                else new_draft(call.box, folder, payload)
            )
        self._commit(lambda: call.box.insert(draft))
        return self._message_response(call, draft, 201)

    def create_reply(self, call: Call, reply_all: bool = False) -> Response:
        payload = call.json_body()
        with self.world.lock:
            draft = reply_draft(call.box, call.message(), payload, reply_all=reply_all)
        self._commit(lambda: call.box.insert(draft))
        return self._message_response(call, draft, 201)

    def create_reply_all(self, call: Call) -> Response:
        return self.create_reply(call, reply_all=True)

    def send(self, call: Call) -> Response:
        def send() -> list[Change]:
            draft = call.message()
            self.uploads.check_size(draft)
            return send_draft(self.store, call.box, draft)

        self._commit(send)
        return Response(status=202)

    def send_mail(self, call: Call) -> Response:
        payload = call.json_body()
        if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
            raise bad_request("message", "sendMail needs a JSON body with a message object")
        save = payload.get("saveToSentItems", True)
        # The documented example sends the string "false" (tests/graph_samples/sendmail-request.json): accept
        # both forms.
        if save not in (True, False, "true", "false"):
            raise bad_request("saveToSentItems", "expected true or false")
        with self.world.lock:
            message = new_draft(call.box, call.box.well_known("drafts"), payload["message"])
        self._commit(lambda: send_new(self.store, call.box, message, save_to_sent_items=save in (True, "true")))
        return Response(status=202)

    def list_attachments(self, call: Call) -> Response:
        select = parse_attachment_select(call.request.args.get("$select"))
        with self.world.lock:
            m = call.message()
            body = {
                "@odata.context": self._context(call, f"messages('{call.ids[0]}')/attachments"),
                "value": [attachment_json(a, select) for a in m.attachments],
            }
        return json_response(body)

    def add_attachment(self, call: Call) -> Response:
        attachment = attachment_from_json(call.json_body())

        def add() -> list[Change]:
            message = call.message()
            self.uploads.check_size(message, len(attachment.content))
            message.attachments.append(attachment)
            return call.box.touch(message)

        self._commit(add)
        body = {
            "@odata.context": self._context(call, f"messages('{call.ids[0]}')/attachments/$entity"),
            **attachment_json(attachment, None),
        }
        return json_response(body, 201)

    def create_upload_session(self, call: Call) -> Response:
        payload = call.json_body()
        with self.world.lock:
            message = call.message()
        principal = call.principal or Principal(call.box.mailbox.id, "")
        return self.uploads.create(call.box, message, call.ids[0], payload, principal)

    def get_attachment(self, call: Call) -> Response:
        select = parse_attachment_select(call.request.args.get("$select"))
        with self.world.lock:
            attachment = self._attachment(call)
            body = {
                "@odata.context": self._context(call, f"messages('{call.ids[0]}')/attachments/$entity"),
                **attachment_json(attachment, select),
            }
        return json_response(body)

    def attachment_value(self, call: Call) -> Response:
        with self.world.lock:
            attachment = self._attachment(call)
        if attachment.kind == "reference":
            # A referenceAttachment's /$value answers 405 (CONTRACT.md section 5).
            return graph_error(405, "ErrorInvalidRequest", "The raw content of a referenceAttachment is not available.")
        mimetype = "message/rfc822" if attachment.kind == "item" else attachment.content_type
        return Response(attachment.content, status=200, mimetype=mimetype)

    def _attachment(self, call: Call) -> Any:
        found = call.message().attachment(call.ids[1])
        if found is None:
            raise MailError(404, "ErrorItemNotFound", "The attachment was not found.")
        return found

    def delta(self, call: Call) -> Response:
        args = call.request.args
        with self.world.lock:
            folder = call.folder()
            if raw := args.get("$skiptoken") or args.get("$deltatoken"):
                token = mail_delta.DeltaToken.decode(raw, "$skiptoken" if "$skiptoken" in args else "$deltatoken")
            else:  # the first call, or a restart from a 410's empty $deltatoken URL
                select = parse_select(args.get("$select"), MESSAGE_SELECTABLE, MESSAGE_TYPE)
                received = mail_delta.parse_filter(args.get("$filter"))
                token = mail_delta.start_token(call.box, folder, select, received)
            if token.folder_id != folder.id:
                raise MailError(400, "BadRequest", "The delta token belongs to another folder.")
            size = _int_arg(
                call.prefer.get("odata.maxpagesize") or args.get("$top"), "odata.maxpagesize", mail_delta.PAGE_SIZE
            )
            try:
                result = mail_delta.page(call.box, token, size, call.view)
            except mail_delta.DeltaGone:
                # 410 Gone with a Location holding an empty-$deltatoken URL: resync (CONTRACT.md section 7).
                restart = self._link(call, f"mailFolders/{folder.id}/messages/delta", {"$deltatoken": ""})
                return graph_error(
                    410,
                    "resyncRequired",
                    "The delta token has expired; start over with the Location URL.",
                    headers={"Location": restart},
                )
        key, link_name = ("$deltatoken", "@odata.deltaLink") if result.is_last else ("$skiptoken", "@odata.nextLink")
        body = {
            "@odata.context": f"{self.server.graph_base_url}/$metadata#Collection(message)",
            link_name: self._link(call, f"mailFolders/{folder.id}/messages/delta", {key: result.next_token.encode()}),
            "value": result.items,
        }
        headers = self._applied(call)
        if "odata.maxpagesize" in call.prefer:
            headers["Preference-Applied"] = ", ".join(
                filter(None, [headers.get("Preference-Applied"), f"odata.maxpagesize={size}"])
            )
        return json_response(body, headers=headers)


def _int_arg(raw: str | None, name: str, default: int, low: int = 1, high: int = 1000) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MailError(400, "BadRequest", f"Invalid value for {name}: expected an integer.") from None
    if not low <= value <= high:
        raise MailError(400, "BadRequest", f"Invalid value for {name}: expected {low} to {high}.")
    return value


def _segments(path: str) -> list[str]:
    """Path segments after ``/v1.0``, with OData keys (``mailFolders('Inbox')``) split into name and key."""
    out: list[str] = []
    for segment in path.split("/")[2:]:
        if match := _KEY_SEGMENT.match(segment):
            out += [match.group(1), match.group(2)]
        elif segment:
            out.append(segment)
    return out


def _pattern(rest: list[str]) -> tuple[str, list[str]]:
    """``messages/{id}/attachments`` and the ids, from the segments after the user."""
    parts: list[str] = []
    ids: list[str] = []
    for i, segment in enumerate(rest):
        previous = rest[i - 1].lower() if i else ""
        action = (previous, segment.lower()) in {("messages", "delta"), ("attachments", "createuploadsession")}
        if previous in _ID_AFTER and not action:
            parts.append("{id}")
            ids.append(segment)
        else:
            parts.append(segment.lower())
    pattern = "/".join(parts)
    if pattern.startswith("mailfolders/{id}/messages/{id}"):  # a message addressed through its folder
        pattern, ids = pattern[len("mailfolders/{id}/") :], ids[1:]
    return pattern, ids


_READ = frozenset({"Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"})
_READ_FULL = frozenset({"Mail.Read", "Mail.ReadWrite"})  # attachments are beyond Mail.ReadBasic
_WRITE = frozenset({"Mail.ReadWrite"})
_SEND = frozenset({"Mail.Send"})
_SCOPES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", ""): frozenset({"User.Read"}),
    ("POST", "messages"): _WRITE,
    ("DELETE", "messages/{id}"): _WRITE,
    ("POST", "mailfolders/{id}/messages"): _WRITE,
    ("GET", "messages/{id}/attachments"): _READ_FULL,
    ("POST", "messages/{id}/attachments"): _WRITE,
    ("POST", "messages/{id}/attachments/createuploadsession"): _WRITE,
    ("GET", "messages/{id}/attachments/{id}"): _READ_FULL,
    ("GET", "messages/{id}/attachments/{id}/$value"): _READ_FULL,
    ("POST", "messages/{id}/send"): _SEND,
    ("POST", "messages/{id}/createreply"): _WRITE,
    ("POST", "messages/{id}/createreplyall"): _WRITE,
    ("POST", "sendmail"): _SEND,
}

_ROUTES: dict[str, dict[str, Handler]] = {
    "": {"GET": MailApi.get_user},
    "messages": {"GET": MailApi.list_messages, "POST": MailApi.create_message},
    "messages/{id}": {"GET": MailApi.get_message, "DELETE": MailApi.delete_message},
    "messages/{id}/$value": {"GET": MailApi.message_value},
    "messages/{id}/attachments": {"GET": MailApi.list_attachments, "POST": MailApi.add_attachment},
    "messages/{id}/attachments/createuploadsession": {"POST": MailApi.create_upload_session},
    "messages/{id}/attachments/{id}": {"GET": MailApi.get_attachment},
    "messages/{id}/attachments/{id}/$value": {"GET": MailApi.attachment_value},
    "messages/{id}/send": {"POST": MailApi.send},
    "messages/{id}/createreply": {"POST": MailApi.create_reply},
    "messages/{id}/createreplyall": {"POST": MailApi.create_reply_all},
    "sendmail": {"POST": MailApi.send_mail},
    "mailfolders/{id}": {"GET": MailApi.get_folder},
    "mailfolders/{id}/messages": {"GET": MailApi.list_messages, "POST": MailApi.create_message},
    "mailfolders/{id}/messages/delta": {"GET": MailApi.delta},
}
