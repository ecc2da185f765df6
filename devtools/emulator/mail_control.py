"""Control endpoints that play the rest of the mail world: contacts writing in, the owner using Outlook.

JSON in (snake_case), JSON out (a message is shown as Graph shows it, with immutable ids, plus ``restId``).
An address is ``"a@b.example"`` or ``{"address": ..., "name": ...}``; ``{mailbox}`` is an address or id.

- ``POST /_emulator/mailboxes`` ``{"address", "displayName"?}`` -> 201 ``{"id", "address", "displayName"}``;
  ``GET /_emulator/mailboxes`` lists them.
- ``POST /_emulator/mail/{mailbox}/deliver``: a message from an outside contact lands in the Inbox.
  ``{"from", "to"? (default: the owner), "cc"?, "subject", "body_html" | "body_text", "internet_message_id"?,
  "in_reply_to"? (a Message-ID: same conversation when the mailbox has it, In-Reply-To/References set),
  "new_conversation"? (a changed subject split the conversation; the headers stay),
  "attachments"?: [{"kind": "file"|"inline"|"item"|"reference", "name", "size" | "content_base64",
  "content_type"?, "content_id"? (inline: default ``{name}@emulator.invalid``; the body gets an ``<img>`` for
  each inline one it does not reference yet)}]}`` -> 201 message. Generated content is deterministic (a
  function of name and size).
- ``POST /_emulator/mail/{mailbox}/reply`` ``{"message_id", "reply_all"?, "body_html"|"body_text", "to"?, "cc"?,
  "subject"?, "new_conversation"?, "from"?}``: the owner replies (or forwards: ``to`` a colleague) in Outlook,
  maybe to other recipients, with a changed subject (``new_conversation``: Outlook split the conversation), or
  from an address the mailbox may send as (``from``) -> 201 the Sent Items message, which has no
  internetMessageHeaders (CONTRACT.md section 4; external recipients become outbound deliveries).
- ``POST /_emulator/mail/{mailbox}/send`` ``{"to", "cc"?, "subject", "body_html"|"body_text"}``: the owner starts
  a new thread in Outlook -> 201 the Sent Items message.
- ``GET /_emulator/mail/{mailbox}/messages?folder=inbox``: the messages (all folders without ``folder``).
- ``PATCH /_emulator/mail/{mailbox}/messages/{id}`` ``{"is_read"?, "categories"?, "flag"?}`` -> 200 (``updated``).
- ``POST /_emulator/mail/{mailbox}/messages/{id}/move`` ``{"folder"}`` -> 200; ``DELETE …/messages/{id}`` -> 204
  (hard-deleted: its ids stop resolving); ``POST …/messages/{id}/to-archive-mailbox`` -> 200 the message as it is
  now, in the user's archive mailbox, under a new immutable id (CONTRACT.md section 4: the id changes on such a
  move); it leaves this mailbox, whose ids for it stop resolving. Graph v1.0 does not serve the archive mailbox
  (section 4), so it is read here only: ``GET /_emulator/mail/{mailbox}/archive``.
- ``POST /_emulator/mail/{mailbox}/delta/expire``: every delta token of the mailbox answers 410 Gone from now.
- ``GET /_emulator/mail/outbound?mailbox=...``: what left the emulator; ``DELETE`` clears it.
- ``GET /_emulator/mail/requests``: request counts ``{mailbox id: {route: n}}``; ``DELETE`` resets them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from devtools.emulator.mail_compose import html_wrap, new_conversation, new_draft, reply_draft
from devtools.emulator.mail_render import View, message_json
from devtools.emulator.mail_store import (
    Address,
    Attachment,
    MailboxData,
    MailError,
    MailStore,
    Message,
    bad_request,
    new_id,
)
from devtools.emulator.mail_transport import receive_external, send_new
from devtools.emulator.state import Change
from devtools.emulator.web import Host, graph_error, json_response

_SHOWN = View(immutable_ids=True)


def _address(value: Any, field: str) -> Address:
    if isinstance(value, str) and "@" in value:
        return Address(value)
    if isinstance(value, dict) and isinstance(value.get("address"), str) and "@" in value["address"]:
        return Address(value["address"], str(value.get("name") or ""))
    raise bad_request(field, 'expected "someone@example.com" or {"address": ..., "name": ...}', "BadRequest")


def _addresses(value: Any, field: str) -> list[Address]:
    items = value if isinstance(value, list) else [value]
    return [_address(v, f"{field}[{i}]") for i, v in enumerate(items)]


def _graph_recipients(items: list[Address]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a.address, "name": a.name}} for a in items]


def _body(spec: dict[str, Any]) -> tuple[str, str]:
    if isinstance(spec.get("body_html"), str):
        return spec["body_html"], "html"
    if isinstance(spec.get("body_text"), str):
        return spec["body_text"], "text"
    if "body_html" in spec or "body_text" in spec:
        raise bad_request("body_html", "expected a string", "BadRequest")
    return "", "html"


def generated_content(name: str, size: int) -> bytes:
    """Deterministic bytes for a generated attachment: the same name and size give the same bytes."""
    return hashlib.shake_256(name.encode()).digest(size)


def _attachment(spec: Any, field: str) -> Attachment:
    if not isinstance(spec, dict):
        raise bad_request(field, "expected an object", "BadRequest")
    kind = spec.get("kind", "file")
    if kind not in {"file", "inline", "item", "reference"}:
        raise bad_request(f"{field}.kind", "expected file, inline, item or reference", "BadRequest")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{field}.name", "expected a file name", "BadRequest")
    if kind == "reference":  # a link to a cloud file: no bytes here
        content = b""
    elif "content_base64" in spec:
        try:
            content = base64.b64decode(str(spec["content_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{field}.content_base64", "expected base64", "BadRequest") from None
    elif isinstance(spec.get("size"), int) and not isinstance(spec["size"], bool) and spec["size"] >= 0:
        content = generated_content(name, spec["size"])
    else:
        raise bad_request(f"{field}.size", "expected a size in bytes (or content_base64)", "BadRequest")
    content_id = spec.get("content_id")
    if content_id is not None and (not isinstance(content_id, str) or not content_id or kind != "inline"):
        raise bad_request(f"{field}.content_id", "expected a non-empty string, on an inline attachment", "BadRequest")
    default_type = {"item": "message/rfc822", "inline": "image/png"}.get(kind, "application/octet-stream")
    content_type = str(spec.get("content_type") or default_type)
    if kind == "item":  # the attached message, as its MIME text
        head = f"Subject: {name}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n".encode()
        content = head + content
    return Attachment(
        id=new_id("AAMkAGI2THVSAAABEgAQA", 18),
        kind="reference" if kind == "reference" else "item" if kind == "item" else "file",
        name=name,
        content_type=content_type,
        content=content,
        is_inline=kind == "inline",
        content_id=(content_id or f"{name}@emulator.invalid") if kind == "inline" else None,
    )


class MailControl:
    """Answers the ``/_emulator/mailboxes`` and ``/_emulator/mail/...`` requests described in the module doc."""

    def __init__(self, server: Host, store: MailStore) -> None:
        self.server = server
        self.world = server.world
        self.store = store

    def control(self, request: Request) -> Response | None:
        """Answer a control request this module owns, else None."""
        path = request.path.rstrip("/")
        try:
            if path == "/_emulator/mailboxes":
                return self._mailboxes(request)
            if not path.startswith("/_emulator/mail/"):
                return None
            parts = path[len("/_emulator/mail/") :].split("/")
            if parts == ["outbound"]:
                return self._outbound(request)
            if parts == ["requests"]:
                return self._requests(request)
            return self._mailbox_action(request, parts)
        except MailError as err:
            return graph_error(err.status, err.code, err.message)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _json(self, request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise bad_request("body", "not valid JSON", "BadRequest") from None
        if not isinstance(payload, dict):
            raise bad_request("body", "expected a JSON object", "BadRequest")
        return payload

    def _commit(self, action: Callable[[], list[Change]]) -> None:
        with self.world.lock:
            changes = action()
        for change in changes:
            self.world.publish(change)

    def _shown(self, m: Message, status: int = 200) -> Response:
        with self.world.lock:
            return json_response({**message_json(m, _SHOWN, None), "restId": m.rest_id}, status)

    # -- endpoints ----------------------------------------------------------------------------------------------
    def _mailboxes(self, request: Request) -> Response:
        if request.method == "GET":
            with self.world.lock:
                boxes = list(self.world.mailboxes.values())
            return json_response(
                {"value": [{"id": m.id, "address": m.address, "displayName": m.display_name} for m in boxes]}
            )
        if request.method != "POST":
            return graph_error(405, "BadRequest", f"{request.method} is not allowed here")
        payload = self._json(request)
        address = _address(payload.get("address"), "address").address
        display = payload.get("displayName")
        if display is not None and not isinstance(display, str):
            raise bad_request("displayName", "expected a string", "BadRequest")
        mailbox = self.world.add_mailbox(address, display)
        return json_response({"id": mailbox.id, "address": mailbox.address, "displayName": mailbox.display_name}, 201)

    def _outbound(self, request: Request) -> Response:
        with self.world.lock:
            if request.method == "DELETE":
                self.store.outbound.clear()
                return Response(status=204)
            wanted = request.args.get("mailbox")
            box = self.store.box_of(wanted) if wanted else None
            if wanted and box is None:
                raise MailError(404, "BadRequest", f"mailbox: no mailbox {wanted!r}")
            found = [d.to_json() for d in self.store.outbound if box is None or d.mailbox_id == box.mailbox.id]
        return json_response({"value": found})

    def _requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.server.log.clear()
            return Response(status=204)
        return json_response(self.server.log.counts())

    def _mailbox_action(self, request: Request, parts: list[str]) -> Response:
        with self.world.lock:
            box = self.store.box_of(parts[0])
        if box is None:
            raise MailError(404, "BadRequest", f"mailbox: no mailbox {parts[0]!r}")
        rest = parts[1:]
        if rest[:1] == ["messages"] and len(rest) > 1:
            rest = ["messages", "{id}", *rest[2:]]
        action = (request.method, "/".join(rest))
        handlers: dict[tuple[str, str], Callable[[Request, MailboxData, list[str]], Response]] = {
            ("POST", "deliver"): self._deliver,
            ("POST", "reply"): self._reply,
            ("POST", "send"): self._send,
            ("GET", "messages"): self._list,
            ("PATCH", "messages/{id}"): self._update,
            ("DELETE", "messages/{id}"): self._delete,
            ("POST", "messages/{id}/move"): self._move,
            ("POST", "messages/{id}/to-archive-mailbox"): self._archive,
            ("GET", "archive"): self._archived,
            ("POST", "delta/expire"): self._expire,
        }
        if action not in handlers:
            return graph_error(404, "notFound", f"no control endpoint {request.method} {request.path}")
        return handlers[action](request, box, parts)

    def _message(self, box: MailboxData, message_id: str) -> Message:
        found = box.message(message_id)
        if found is None:
            raise MailError(404, "ErrorItemNotFound", f"message_id: no message {message_id!r} in {box.mailbox.address}")
        return found

    def _deliver(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        spec = self._json(request)
        sender = _address(spec.get("from"), "from")
        subject = spec.get("subject", "")
        if not isinstance(subject, str):
            raise bad_request("subject", "expected a string", "BadRequest")
        body, body_type = _body(spec)
        attachments = [_attachment(a, f"attachments[{i}]") for i, a in enumerate(spec.get("attachments") or [])]
        inline = [a for a in attachments if a.is_inline]
        if inline and body_type == "html":  # inline images are referenced from the body by cid:
            body += "".join(f'<img src="cid:{a.content_id}">' for a in inline if f"cid:{a.content_id}" not in body)
        in_reply_to = spec.get("in_reply_to")
        if in_reply_to is not None and not (isinstance(in_reply_to, str) and in_reply_to.startswith("<")):
            raise bad_request("in_reply_to", "expected a Message-ID like <id@host>", "BadRequest")
        message = Message(
            immutable_id=new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC"),
            rest_id=new_id("AAMkAGI2TG"),
            folder_id="",
            subject=subject,
            body=html_wrap(body) if body_type == "html" else body,
            body_type="html" if body_type == "html" else "text",
            internet_message_id=str(spec.get("internet_message_id") or ""),
            conversation_id="",
            conversation_index=b"",
            from_=sender,
            sender=sender,
            to=_addresses(spec["to"], "to")
            if "to" in spec
            else [Address(box.mailbox.address, box.mailbox.display_name)],
            cc=_addresses(spec.get("cc") or [], "cc"),
            attachments=attachments,
        )
        new_thread = bool(spec.get("new_conversation", False))
        self._commit(lambda: receive_external(box, message, in_reply_to, new_thread=new_thread))
        return self._shown(message, 201)

    def _reply(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        spec = self._json(request)
        message_id = spec.get("message_id")
        if not isinstance(message_id, str):
            raise bad_request("message_id", "expected the id of the message to reply to", "BadRequest")
        body, body_type = _body(spec)
        subject = spec.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise bad_request("subject", "expected a string", "BadRequest")
        send_as = _address(spec["from"], "from") if "from" in spec else None
        with self.world.lock:
            original = self._message(box, message_id)
            draft = reply_draft(
                box,
                original,
                {"message": {"body": {"contentType": body_type, "content": body}}},
                reply_all=bool(spec.get("reply_all")),
            )
            # What the user may change in Outlook before sending: recipients (another address of the contact, a
            # colleague for a forward), the subject. A changed subject may start a new conversation; the
            # In-Reply-To and References headers stay either way.
            if "to" in spec:
                draft.to = _addresses(spec["to"], "to")
            if "cc" in spec:
                draft.cc = _addresses(spec["cc"], "cc")
            if subject is not None:
                draft.subject = subject
            if spec.get("new_conversation"):
                draft.conversation_id, draft.conversation_index = new_conversation()
        self._commit(lambda: send_new(self.store, box, draft, save_to_sent_items=True, send_as=send_as))
        return self._shown(draft, 201)

    def _send(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        spec = self._json(request)
        body, body_type = _body(spec)
        graph_message = {
            "subject": spec.get("subject", ""),
            "body": {"contentType": body_type, "content": body},
            "toRecipients": _graph_recipients(_addresses(spec.get("to") or [], "to")),
            "ccRecipients": _graph_recipients(_addresses(spec.get("cc") or [], "cc")),
        }
        with self.world.lock:
            message = new_draft(box, box.well_known("drafts"), graph_message)
        self._commit(lambda: send_new(self.store, box, message, save_to_sent_items=True))
        return self._shown(message, 201)

    def _list(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        with self.world.lock:
            folder = box.folder(request.args["folder"]) if "folder" in request.args else None
            if "folder" in request.args and folder is None:
                raise MailError(404, "ErrorItemNotFound", f"folder: no folder {request.args['folder']!r}")
            found = [m for m in box.messages.values() if folder is None or m.folder_id == folder.id]
            value = [{**message_json(m, _SHOWN, None), "restId": m.rest_id} for m in found]
        return json_response({"value": value})

    def _update(self, request: Request, box: MailboxData, parts: list[str]) -> Response:
        spec = self._json(request)

        def update() -> list[Change]:
            message = self._message(box, parts[2])
            for key, value in spec.items():
                if key == "is_read" and isinstance(value, bool):
                    message.is_read = value
                elif key == "categories" and isinstance(value, list) and all(isinstance(c, str) for c in value):
                    message.categories = list(value)
                elif key == "flag" and value in {"notFlagged", "flagged", "complete"}:
                    message.flag_status = value
                else:
                    raise bad_request(key, "expected is_read (bool), categories (strings) or flag", "BadRequest")
            return box.touch(message)

        self._commit(update)
        return self._shown(self._message(box, parts[2]))

    def _move(self, request: Request, box: MailboxData, parts: list[str]) -> Response:
        spec = self._json(request)
        folder = box.folder(str(spec.get("folder", "")))
        if folder is None:
            raise bad_request("folder", "expected a folder id or well-known name (inbox, archive, ...)", "BadRequest")
        message = self._message(box, parts[2])
        self._commit(lambda: box.move(message, folder))
        return self._shown(message)

    def _delete(self, request: Request, box: MailboxData, parts: list[str]) -> Response:
        self._commit(lambda: box.delete(self._message(box, parts[2])))
        return Response(status=204)

    def _archive(self, request: Request, box: MailboxData, parts: list[str]) -> Response:
        moved: list[Message] = []

        def archive() -> list[Change]:
            kept, changes = box.archive(self._message(box, parts[2]))
            moved.append(kept)
            return changes

        self._commit(archive)
        return self._shown(moved[0])

    def _archived(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        with self.world.lock:
            value = [{**message_json(m, _SHOWN, None), "restId": m.rest_id} for m in box.archived.values()]
        return json_response({"value": value})

    def _expire(self, request: Request, box: MailboxData, _: list[str]) -> Response:
        with self.world.lock:
            box.delta_epoch += 1
        return Response(status=204)
