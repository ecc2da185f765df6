"""How messages come to be: Graph JSON input (drafts, replies, attachments), threading, and Internet headers.

Threading follows Exchange: a conversation is a ``conversationIndex`` (a 22-byte header whose GUID names the
conversation, plus 5 bytes per reply) and a ``conversationId`` derived from that GUID. A reply keeps the parent's
conversation; anything else starts a new one (CONTRACT.md section 4).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import secrets
from typing import Any

from devtools.emulator.mail_store import (
    Address,
    Attachment,
    Folder,
    MailboxData,
    MailError,
    Message,
    bad_request,
    new_id,
)

# "This operation limits the size of the attachment you can add to under 3 MB" (CONTRACT.md section 5).
MAX_INLINE_ATTACHMENT = 3 * 1024 * 1024

_DRAFT_FIELDS = {
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "importance",
    "categories",
    "internetMessageId",
    "internetMessageHeaders",
    "attachments",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "flag",
}
_IMPORTANCE = {"low", "normal", "high"}


def fmt_time(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc5322_date(value: dt.datetime) -> str:
    return value.strftime("%a, %d %b %Y %H:%M:%S +0000")


def new_internet_message_id(domain: str | None = None) -> str:
    """A Message-ID as Exchange Online writes it, 80 characters long, or a peer's.

    Exchange's are the server's name, 25 hex digits, ``@`` the server's name again and its datacentre
    (``<MN2PR12MB35989F684730625B10ABB6348ED60@MN2PR12MB3598.namprd12.prod.outlook.com>``, CONTRACT.md section
    4): too long for a 78-character header line, so a client that folds or encodes them is found out here.
    """
    if domain:
        return f"<{secrets.token_hex(12)}@{domain}>"
    server = f"MW4PR11MB{secrets.randbelow(10_000):04d}"
    return f"<{server}{secrets.token_hex(13).upper()[:25]}@{server}.namprd11.prod.outlook.com>"


def conversation_id_of(index: bytes) -> str:
    return "AAQkAD" + base64.urlsafe_b64encode(hashlib.sha256(index[6:22]).digest()[:24]).decode() + "="


def new_conversation() -> tuple[str, bytes]:
    """A fresh conversation: 1 reserved byte, 5 bytes of time, a 16-byte GUID."""
    index = b"\x01" + secrets.token_bytes(5) + secrets.token_bytes(16)
    return conversation_id_of(index), index


def reply_index(parent_index: bytes) -> bytes:
    """A reply's conversationIndex: the parent's plus a 5-byte child block (same conversation)."""
    return parent_index + secrets.token_bytes(5)


def thread(message: Message, box: MailboxData, referenced: list[str], new_thread: bool = False) -> None:
    """Put ``message`` in the conversation of the newest message of ``box`` it references, else a new one."""
    parent = next((p for ref in reversed(referenced) if (p := box.by_internet_message_id(ref))), None)
    if parent is not None and not new_thread:
        message.conversation_id, message.conversation_index = (
            parent.conversation_id,
            reply_index(parent.conversation_index),
        )
    else:
        message.conversation_id, message.conversation_index = new_conversation()


def references_for(parent: Message) -> str:
    """The References header of a reply to ``parent`` (RFC 5322 section 3.6.4)."""
    earlier = parent.header("References") or parent.header("In-Reply-To") or ""
    return f"{earlier} {parent.internet_message_id}".strip()


def addresses(items: list[Address]) -> str:
    """Addresses as one header value (``"Name" <a@b>, c@d``), as MIME headers carry them."""
    return ", ".join(f'"{a.name}" <{a.address}>' if a.name else a.address for a in items)


def sent_headers(message: Message, sent_at: dt.datetime) -> list[tuple[str, str]]:
    """The Internet headers of a message as it leaves a mailbox, keeping any threading headers it had."""
    sender = message.from_ or Address("unknown@invalid")
    headers = [
        ("From", addresses([sender])),
        ("To", addresses(message.to)),
        ("Subject", message.subject),
        ("Date", rfc5322_date(sent_at)),
        ("Message-ID", message.internet_message_id),
        ("Content-Type", "text/html; charset=utf-8" if message.body_type == "html" else "text/plain; charset=utf-8"),
        ("MIME-Version", "1.0"),
    ]
    if message.cc:
        headers.insert(2, ("Cc", addresses(message.cc)))
    if message.sender and message.sender.address.lower() != sender.address.lower():
        headers.insert(1, ("Sender", addresses([message.sender])))  # sent on behalf of From (RFC 5322 3.6.2)
    kept = [(k, v) for k, v in message.headers if k.lower() in {"in-reply-to", "references"} or k.lower()[:2] == "x-"]
    return headers + kept


def html_wrap(content: str) -> str:
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n</head>\r\n'
        f"<body>\r\n{content}\r\n</body>\r\n</html>\r\n"
    )


# -- Graph JSON input --------------------------------------------------------------------------------------------
def _recipients(value: Any, name: str) -> list[Address]:
    if not isinstance(value, list):
        raise bad_request(name, "expected an array of recipients")
    out = []
    for i, item in enumerate(value):
        email = item.get("emailAddress") if isinstance(item, dict) else None
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str) or "@" not in address:
            raise bad_request(f"{name}[{i}].emailAddress.address", "expected an email address")
        label = email.get("name") or "" if isinstance(email, dict) else ""
        out.append(Address(address, str(label)))
    return out


def _body(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("content", ""), str):
        raise bad_request("body", 'expected {"contentType": "html"|"text", "content": string}')
    kind = str(value.get("contentType", "html")).lower()
    if kind not in {"html", "text"}:
        raise bad_request("body.contentType", "expected html or text")
    return value.get("content", ""), kind


def _custom_headers(value: Any) -> list[tuple[str, str]]:
    # "Add custom headers only when creating a message, and name them starting with x-", at most 5 (section 4).
    if not isinstance(value, list) or len(value) > 5:
        raise MailError(
            400,
            "InvalidInternetMessageHeaderCollection",
            "Maximum number of headers in one message should be less than or equal to 5.",
        )
    out = []
    for i, header in enumerate(value):
        name = header.get("name") if isinstance(header, dict) else None
        if not isinstance(name, str) or not name.lower().startswith("x-"):
            raise MailError(
                400,
                "InvalidInternetMessageHeader",
                f"internetMessageHeaders[{i}].name: custom headers must start with x-",
            )
        out.append((name, str(header.get("value", ""))))
    return out


def apply_message_json(message: Message, payload: Any, box: MailboxData, *, creating: bool) -> None:
    """Set the writable message properties in ``payload`` on ``message`` (400 naming any bad field)."""
    if not isinstance(payload, dict):
        raise bad_request("message", "expected a JSON object")
    for key, value in payload.items():
        if key not in _DRAFT_FIELDS:
            raise MailError(
                400, "RequestBodyRead", f"The property '{key}' does not exist on type 'microsoft.graph.message'."
            )
        if key == "subject":
            if not isinstance(value, str):
                raise bad_request(key, "expected a string")
            message.subject = value
        elif key == "body":
            message.body, kind = _body(value)
            message.body_type = "html" if kind == "html" else "text"
        elif key in {"toRecipients", "ccRecipients", "bccRecipients", "replyTo"}:
            attr = {"toRecipients": "to", "ccRecipients": "cc", "bccRecipients": "bcc", "replyTo": "reply_to"}[key]
            setattr(message, attr, _recipients(value, key))
        elif key == "importance":
            if str(value).lower() not in _IMPORTANCE:
                raise bad_request(key, "expected low, normal or high")
            message.importance = str(value).lower()
        elif key == "categories":
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise bad_request(key, "expected an array of strings")
            message.categories = list(value)
        elif key == "internetMessageId":
            # Updatable only while the message is a draft (CONTRACT.md section 4).
            if not isinstance(value, str) or not (value.startswith("<") and value.endswith(">") and "@" in value):
                raise bad_request(key, "expected an RFC 5322 Message-ID like <id@host>")
            message.internet_message_id = value
        elif key == "internetMessageHeaders":
            if not creating:
                raise MailError(
                    400, "InvalidInternetMessageHeader", "internetMessageHeaders can only be set on create."
                )
            message.headers = _custom_headers(value)
        elif key == "attachments":
            if not isinstance(value, list):
                raise bad_request(key, "expected an array of attachments")
            message.attachments = [attachment_from_json(a, f"attachments[{i}]") for i, a in enumerate(value)]
        elif key == "isRead":
            if not isinstance(value, bool):
                raise bad_request(key, "expected true or false")
            message.is_read = value
        elif key == "flag":
            status = value.get("flagStatus") if isinstance(value, dict) else None
            if status not in {"notFlagged", "flagged", "complete"}:
                raise bad_request("flag.flagStatus", "expected notFlagged, flagged or complete")
            message.flag_status = status
        elif not isinstance(value, bool):  # the two receipt flags: accepted, not modelled
            raise bad_request(key, "expected true or false")


def new_draft(box: MailboxData, folder: Folder, payload: Any) -> Message:
    """A draft from a POST …/messages body, with its ids, Message-ID and a new conversation known up front."""
    conversation_id, index = new_conversation()
    owner = Address(box.mailbox.address, box.mailbox.display_name)
    message = Message(
        immutable_id=new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC"),
        rest_id=new_id("AAMkAGI2TG"),
        folder_id=folder.id,
        subject="",
        body="",
        body_type="html",
        internet_message_id=new_internet_message_id(),
        conversation_id=conversation_id,
        conversation_index=index,
        from_=owner,
        sender=owner,
        is_draft=True,
        is_read=True,
    )
    apply_message_json(message, payload, box, creating=True)
    message.sent = message.created
    return message


def reply_draft(box: MailboxData, original: Message, payload: Any, *, reply_all: bool) -> Message:
    """The draft of ``createReply``/``createReplyAll`` (CONTRACT.md section 6): same conversation, quoted body."""
    if payload is not None and not isinstance(payload, dict):
        raise bad_request("body", "expected a JSON object with comment or message")
    payload = payload or {}
    unknown = set(payload) - {"comment", "message"}
    if unknown:
        raise MailError(400, "RequestBodyRead", f"The parameter '{sorted(unknown)[0]}' is not allowed here.")
    message_json = payload.get("message") or {}
    if "comment" in payload and isinstance(message_json, dict) and "body" in message_json:
        # "give either comment or message.body; both gives 400" (CONTRACT.md section 6).
        raise MailError(400, "ErrorInvalidRequest", "Specify either 'comment' or 'message.body', not both.")
    owner = box.mailbox.address.lower()
    original_from = original.from_ or Address(box.mailbox.address)
    # Replying to one's own sent message addresses its recipients, as Outlook does.
    own = original_from.address.lower() == owner
    to = list(original.to) if own else list(original.reply_to) or [original_from]
    cc: list[Address] = []
    if reply_all:
        seen = {a.address.lower() for a in to} | {owner}
        for address in (*original.to, *original.cc):
            if address.address.lower() not in seen:
                (to if address in original.to else cc).append(address)
                seen.add(address.address.lower())
    subject = original.subject if original.subject.lower().startswith("re:") else f"RE: {original.subject}"
    draft = new_draft(box, box.well_known("drafts"), {})
    draft.subject, draft.to, draft.cc = subject, to, cc
    draft.conversation_id = original.conversation_id
    draft.conversation_index = reply_index(original.conversation_index)
    draft.headers = [("In-Reply-To", original.internet_message_id), ("References", references_for(original))]
    # Known issue: "comment does not become part of the draft body" (CONTRACT.md section 6), so it is not used.
    quoted = (
        f'<hr><div id="divRplyFwdMsg"><b>From:</b> {original_from.name or original_from.address}<br>'
        f"<b>Sent:</b> {rfc5322_date(original.sent or original.received)}<br><b>Subject:</b> {original.subject}"
        f"</div>{original.body}"
    )
    draft.body, draft.body_type = html_wrap(quoted), "html"
    apply_message_json(draft, {k: v for k, v in message_json.items() if k != "body"}, box, creating=False)
    if "body" in message_json:
        content, _ = _body(message_json["body"])
        draft.body = html_wrap(content + quoted)
    return draft


def attachment_from_json(payload: Any, name: str = "attachment") -> Attachment:
    """A fileAttachment from a POST …/attachments body; contentBytes must decode and be under 3 MB."""
    if not isinstance(payload, dict):
        raise bad_request(name, "expected a JSON object")
    kind = str(payload.get("@odata.type", "")).lstrip("#").lower()
    if kind != "microsoft.graph.fileattachment":
        raise bad_request(f"{name}.@odata.type", "only #microsoft.graph.fileAttachment can be added this way")
    if not isinstance(payload.get("name"), str) or not payload["name"]:
        raise bad_request(f"{name}.name", "expected a file name")
    try:
        content = base64.b64decode(str(payload.get("contentBytes", "")), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{name}.contentBytes", "expected base64") from None
    if len(content) >= MAX_INLINE_ATTACHMENT:
        # Graph answers 400 "Maximum request length exceeded." past this size (microsoftgraph/microsoft-graph-docs
        # issue 85); bigger files need an upload session (CONTRACT.md section 5).
        raise MailError(
            400,
            "BadRequest",
            f"Maximum request length exceeded. {name}.contentBytes is {len(content)} bytes; an attachment added "
            f"this way must be under 3 MB ({MAX_INLINE_ATTACHMENT} bytes): use createUploadSession.",
        )
    is_inline = payload.get("isInline", False)
    if not isinstance(is_inline, bool):
        raise bad_request(f"{name}.isInline", "expected true or false")
    content_id = payload.get("contentId")
    return Attachment(
        id=new_id("AAMkAGI2THVSAAABEgAQA", 18),
        kind="file",
        name=payload["name"],
        content_type=str(payload.get("contentType") or "application/octet-stream"),
        content=content,
        is_inline=is_inline,
        content_id=str(content_id) if content_id else None,
    )
