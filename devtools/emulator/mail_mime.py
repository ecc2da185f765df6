"""A message as MIME: what ``GET …/messages/{id}/$value`` answers (CONTRACT.md section 4, "Reading").

The Internet headers come first, threading headers included, also for the sender's own copy in Sent Items, whose
JSON has none (section 4): ``From``, ``To``, ``Cc``, ``Subject``, ``Date``, ``Message-ID``, ``In-Reply-To``,
``References``, custom ``x-`` headers and, on a delivered copy, ``Received``. Then the body and each file or item
attachment as a part (base64; inline ones with their ``Content-ID``).

Assumptions (the docs show MIME but do not specify it): a draft, which has not been sent, gets the headers it
would leave with; Bcc appears only on the sender's copy and drafts; a reference attachment (a link to a cloud file)
has no part; the response's own ``Content-Type`` is ``message/rfc822``.

The other direction, MIME a client writes, is ``mail_mime_draft``: what it reads from MIME is what this module
writes (headers, the body part, file parts with their ``Content-ID``), so a draft created from MIME and sent
comes back from ``$value`` with its threading headers and attachments, and, in Sent Items, still has no
internetMessageHeaders in its JSON.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from devtools.emulator.mail_compose import addresses, sent_headers
from devtools.emulator.mail_store import Attachment, Message

MIME_TYPE = "message/rfc822"
# Lines fold only past RFC 5322's 998-character limit, as Exchange writes them (a Message-ID stays on its line).
POLICY = email.policy.SMTP.clone(max_line_length=998)
_OWN = {"content-type", "mime-version", "content-transfer-encoding"}  # the MIME structure sets these itself


def _headers(m: Message) -> list[tuple[str, str]]:
    sent = any(name.lower() == "message-id" for name, _ in m.headers)
    headers = m.headers if sent else sent_headers(m, m.sent or m.created)
    if m.bcc and (m.sender_copy or m.is_draft):
        headers = [*headers, ("Bcc", addresses(m.bcc))]
    return [(name, value) for name, value in headers if name.lower() not in _OWN]


def _attach(mime: EmailMessage, a: Attachment) -> None:
    if a.kind == "reference":
        return
    if a.kind == "item":
        mime.add_attachment(email.message_from_bytes(a.content), filename=a.name)
        return
    maintype, _, subtype = a.content_type.partition("/")
    if not (maintype and subtype) or maintype == "multipart":
        maintype, subtype = "application", "octet-stream"
    disposition = "inline" if a.is_inline else "attachment"
    cid = f"<{a.content_id}>" if a.content_id else None
    mime.add_attachment(a.content, maintype, subtype, filename=a.name, disposition=disposition, cid=cid)


def message_mime(m: Message) -> bytes:
    """The whole message as MIME bytes (CRLF line ends)."""
    mime = EmailMessage(policy=POLICY)
    for name, value in _headers(m):
        mime[name] = value
    mime.set_content(m.body, subtype="html" if m.body_type == "html" else "plain")
    for attachment in m.attachments:
        _attach(mime, attachment)
    return mime.as_bytes()
