"""Messages, attachments and users as Graph v1.0 JSON, with ``$select`` and ``$expand=attachments(...)``.

Without ``$select`` a message has the default property set of ``tests/graph_samples/message-get-response.json``;
``internetMessageHeaders`` and ``uniqueBody`` come only when selected, and the headers never for the sender's copy
in Sent Items (CONTRACT.md section 4: they are in its MIME, ``mail_mime``). Property names in
``$select`` are case-insensitive, as in Graph; an unknown one is a 400 naming it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from devtools.emulator.mail_compose import fmt_time
from devtools.emulator.mail_store import Address, Attachment, MailError, Message
from devtools.emulator.state import Mailbox


def _address(a: Address | None) -> dict[str, Any] | None:
    return {"emailAddress": {"name": a.name or a.address, "address": a.address}} if a else None


def _addresses(items: list[Address]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"name": a.name or a.address, "address": a.address}} for a in items]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in {"head", "style", "script"}:
            self._skip += 1
        elif tag in {"br", "p", "div", "hr", "tr"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"head", "style", "script"}:
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _text_of(m: Message) -> str:
    return html_to_text(m.body) if m.body_type == "html" else m.body


@dataclass(frozen=True)
class View:
    """How the request wants messages shown: which id form, and the body as text or as stored."""

    immutable_ids: bool = False
    text_body: bool = False

    def id_of(self, m: Message) -> str:
        return m.immutable_id if self.immutable_ids else m.rest_id


_MESSAGE: dict[str, Callable[[Message, View], Any]] = {
    "createdDateTime": lambda m, v: fmt_time(m.created),
    "lastModifiedDateTime": lambda m, v: fmt_time(m.modified),
    "changeKey": lambda m, v: m.change_key,
    "categories": lambda m, v: list(m.categories),
    "receivedDateTime": lambda m, v: fmt_time(m.received),
    "sentDateTime": lambda m, v: fmt_time(m.sent) if m.sent else None,
    # hasAttachments excludes inline attachments (CONTRACT.md section 4).
    "hasAttachments": lambda m, v: any(not a.is_inline for a in m.attachments),
    "internetMessageId": lambda m, v: m.internet_message_id,
    "subject": lambda m, v: m.subject,
    "bodyPreview": lambda m, v: _text_of(m)[:255],
    "importance": lambda m, v: m.importance,
    "parentFolderId": lambda m, v: m.folder_id,
    "conversationId": lambda m, v: m.conversation_id,
    "conversationIndex": lambda m, v: base64.b64encode(m.conversation_index).decode(),
    "isDeliveryReceiptRequested": lambda m, v: False,
    "isReadReceiptRequested": lambda m, v: False,
    "isRead": lambda m, v: m.is_read,
    "isDraft": lambda m, v: m.is_draft,
    "webLink": lambda m, v: (
        f"https://outlook.office365.com/owa/?ItemID={quote(v.id_of(m), safe='')}&exvsurl=1&viewmodel=ReadMessageItem"
    ),
    "inferenceClassification": lambda m, v: "focused",
    "body": lambda m, v: _body(m, v),
    "uniqueBody": lambda m, v: _body(m, v),
    # A draft has no sender yet: Graph leaves from/sender out of a new draft
    # (tests/graph_samples/message-create-draft-response.json).
    "sender": lambda m, v: None if m.is_draft else _address(m.sender),
    "from": lambda m, v: None if m.is_draft else _address(m.from_),
    "toRecipients": lambda m, v: _addresses(m.to),
    "ccRecipients": lambda m, v: _addresses(m.cc),
    "bccRecipients": lambda m, v: _addresses(m.bcc),
    "replyTo": lambda m, v: _addresses(m.reply_to),
    "flag": lambda m, v: {"flagStatus": m.flag_status},
    "internetMessageHeaders": lambda m, v: [{"name": k, "value": val} for k, val in m.headers],
}
MESSAGE_SELECTABLE = list(_MESSAGE)
MESSAGE_DEFAULT = [p for p in _MESSAGE if p not in {"uniqueBody", "internetMessageHeaders"}]

_ATTACHMENT: dict[str, Callable[[Attachment], Any]] = {
    "lastModifiedDateTime": lambda a: fmt_time(a.last_modified),
    "name": lambda a: a.name,
    "contentType": lambda a: a.content_type,
    "size": lambda a: a.size,
    "isInline": lambda a: a.is_inline,
}
# Derived-type properties: selectable only with a type cast (CONTRACT.md section 5: a bare "contentId" fails).
_FILE_ONLY: dict[str, Callable[[Attachment], Any]] = {
    "contentId": lambda a: a.content_id,
    "contentLocation": lambda a: None,
    "contentBytes": lambda a: base64.b64encode(a.content).decode(),
}
_FILE_CAST = "microsoft.graph.fileattachment/"
ODATA_TYPES = {
    "file": "#microsoft.graph.fileAttachment",
    "item": "#microsoft.graph.itemAttachment",
    "reference": "#microsoft.graph.referenceAttachment",
}


def _body(m: Message, view: View) -> dict[str, str]:
    if view.text_body:
        return {"contentType": "text", "content": _text_of(m)}
    return {"contentType": m.body_type, "content": m.body}


def parse_select(raw: str | None, known: list[str], type_name: str) -> list[str] | None:
    """The canonical property names in a ``$select`` (``id`` is implied), or None when there is none."""
    if raw is None:
        return None
    by_lower = {p.lower(): p for p in known}
    out: list[str] = []
    for item in (s.strip() for s in raw.split(",")):
        if item.lower() == "id" or not item:
            continue
        if item.lower() not in by_lower:
            raise MailError(
                400, "RequestBroker--ParseUri", f"Could not find a property named '{item}' on type '{type_name}'."
            )
        if by_lower[item.lower()] not in out:
            out.append(by_lower[item.lower()])
    return out


def parse_attachment_select(raw: str | None) -> list[str] | None:
    known = list(_ATTACHMENT) + [_FILE_CAST + p.lower() for p in _FILE_ONLY]
    return parse_select(raw, known, "microsoft.graph.attachment")


@dataclass(frozen=True)
class ExpandAttachments:
    """``$expand=attachments`` with its ``$select`` (None: every property)."""

    select: list[str] | None


def parse_expand(raw: str | None) -> ExpandAttachments | None:
    """``$expand=attachments`` or ``attachments($select=...)``; None when absent."""
    if raw is None:
        return None
    match = re.fullmatch(r"\s*attachments\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*", raw, re.IGNORECASE)
    if not match:
        raise MailError(
            400,
            "RequestBroker--ParseUri",
            f"Could not find a navigation property named '{raw}' on type "
            "'microsoft.graph.message' that can be expanded (only attachments is supported).",
        )
    return ExpandAttachments(parse_attachment_select(match.group(1)) if match.group(1) is not None else None)


def message_json(
    m: Message, view: View, select: list[str] | None, expand: ExpandAttachments | None = None
) -> dict[str, Any]:
    """A message: default properties (None-valued ones left out, as Graph omits them), or exactly the selected."""
    out: dict[str, Any] = {"@odata.etag": m.etag, "id": view.id_of(m)}
    for name in select if select is not None else MESSAGE_DEFAULT:
        if name == "internetMessageHeaders" and m.sender_copy:
            continue  # absent on the Sent Items copy even when selected (CONTRACT.md section 4)
        value = _MESSAGE[name](m, view)
        if value is not None or select is not None:
            out[name] = value
    if expand is not None:
        out["attachments"] = [attachment_json(a, expand.select) for a in m.attachments]
    return out


def attachment_json(a: Attachment, select: list[str] | None) -> dict[str, Any]:
    """An attachment with ``@odata.type`` (the SDKs pick the model by it); file properties only on files."""
    out: dict[str, Any] = {"@odata.type": ODATA_TYPES[a.kind], "id": a.id}
    for name, value in _ATTACHMENT.items():
        if select is None or name in select:
            out[name] = value(a)
    if a.kind == "file":
        for name, value in _FILE_ONLY.items():
            if select is None or _FILE_CAST + name.lower() in select:
                out[name] = value(a)
    return out


def user_json(mailbox: Mailbox, graph_base_url: str) -> dict[str, Any]:
    first, _, last = mailbox.display_name.partition(" ")
    return {
        "@odata.context": f"{graph_base_url}/$metadata#users/$entity",
        "businessPhones": [],
        "displayName": mailbox.display_name,
        "givenName": first,
        "jobTitle": None,
        "mail": mailbox.address,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": last or None,
        "userPrincipalName": mailbox.address,
        "id": mailbox.id,
    }
