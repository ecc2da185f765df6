"""A draft created from MIME: ``POST …/messages`` with ``Content-Type: text/plain`` and the message as base64
MIME (CONTRACT.md section 6). This is how a client sets headers JSON cannot (``In-Reply-To``/``References``,
CONTRACT.md section 4): they are kept on the draft, and leave with it when it is sent.

What is read from the MIME: Subject, To, Cc, Bcc, Reply-To, Message-ID, In-Reply-To, References and ``X-``
headers (Message-ID, In-Reply-To and References as written, only unfolded: they are structured fields where an
RFC 2047 encoded-word is not allowed, so ``=?utf-8?q?=3C…?=`` stays what it is, not a Message-ID that threads,
CONTRACT.md section 4); the body (the HTML part, else the plain-text part); every other leaf part with a file name or a
Content-ID becomes a file attachment (``Content-Disposition: inline`` or a Content-ID makes it inline, the
Content-ID without its angle brackets is its ``contentId``). Reading a message back as MIME (``$value``) is
``mail_mime``; once sent, such a draft is a Sent Items copy like any other (no internetMessageHeaders in JSON).

Bad base64 is 400 "Invalid base64 string for MIME content." (CONTRACT.md section 6).

Assumptions, where the contract is silent:
- the base64 must be one unbroken string (no line breaks), and its error code is
  ``ErrorMimeContentInvalidBase64String``; MIME without a single header is 400 ``ErrorMimeContentInvalid``;
- the draft's sender is the mailbox owner whatever the MIME's From says (a delegated token sends as itself);
- a Message-ID in the MIME is kept (``internetMessageId`` is writable on a draft, CONTRACT.md section 4);
  without one the draft gets an Exchange-style Message-ID, as a JSON draft does;
- the draft joins the conversation of the newest message of the mailbox its In-Reply-To/References name (as a
  received reply does, ``mail_compose.thread``); when the mailbox has none of them, it starts a new one.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
from email.message import EmailMessage
from email.utils import getaddresses

from devtools.emulator.mail_compose import new_draft, thread
from devtools.emulator.mail_store import Address, Attachment, Folder, MailboxData, MailError, Message, new_id


def _referenced(message: Message) -> list[str]:
    """Message-IDs named by References, then In-Reply-To, oldest first (``thread`` takes the newest it has)."""
    ids = (message.header("References") or "").split()
    reply_to = (message.header("In-Reply-To") or "").strip()
    return [*ids, reply_to] if reply_to and reply_to not in ids else ids


def _addresses(mime: EmailMessage, name: str) -> list[Address]:
    values = [str(v) for v in mime.get_all(name, [])]
    return [Address(address, label) for label, address in getaddresses(values) if "@" in address]


def _raw(mime: EmailMessage, name: str) -> str | None:
    """A header's value as written, unfolded (CRLF before white space removed), never decoded."""
    wanted = name.lower()
    value = next((v for k, v in mime.raw_items() if k.lower() == wanted), None)
    return None if value is None else value.replace("\r\n", "").replace("\n", "").strip()


def _decoded(raw: bytes) -> EmailMessage:
    try:
        data = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MailError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.") from None
    mime = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(mime, EmailMessage)  # policy.default builds EmailMessage
    if not mime.keys():
        raise MailError(400, "ErrorMimeContentInvalid", "The MIME content has no headers.")
    return mime


def _attachments(mime: EmailMessage, body: EmailMessage | None) -> list[Attachment]:
    out = []
    for part in mime.walk():
        if part.is_multipart() or part is body:
            continue
        assert isinstance(part, EmailMessage)
        content_id = str(part.get("Content-ID", "")).strip().strip("<>") or None
        name = part.get_filename()
        if not name and not content_id:
            continue
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        out.append(
            Attachment(
                id=new_id("AAMkAGI2THVSAAABEgAQA", 18),
                kind="file",
                name=name or content_id or "attachment",
                content_type=part.get_content_type(),
                content=content,
                is_inline=part.get_content_disposition() == "inline" or content_id is not None,
                content_id=content_id,
            )
        )
    return out


def draft_from_mime(box: MailboxData, folder: Folder, raw: bytes) -> Message:
    """The draft a base64 MIME body describes, threaded by its In-Reply-To/References."""
    mime = _decoded(raw)
    draft = new_draft(box, folder, {})
    draft.subject = str(mime.get("Subject", ""))
    draft.to, draft.cc, draft.bcc = _addresses(mime, "To"), _addresses(mime, "Cc"), _addresses(mime, "Bcc")
    draft.reply_to = _addresses(mime, "Reply-To")
    message_id = _raw(mime, "Message-ID") or ""
    if message_id.startswith("<") and message_id.endswith(">") and "@" in message_id:
        draft.internet_message_id = message_id
    draft.headers = [(key, str(value)) for key, value in mime.items() if key.lower().startswith("x-")] + [
        (key, value) for key in ("In-Reply-To", "References") if (value := _raw(mime, key)) is not None
    ]
    body = mime.get_body(preferencelist=("html", "plain"))
    if isinstance(body, EmailMessage):
        content = body.get_content()
        draft.body = content if isinstance(content, str) else content.decode("utf-8", "replace")
        draft.body_type = "html" if body.get_content_subtype() == "html" else "text"
    draft.attachments = _attachments(mime, body if isinstance(body, EmailMessage) else None)
    thread(draft, box, _referenced(draft))
    return draft
