"""A reply whose thread has no message left in the mailbox to ``createReply`` on (deleted in Outlook, or moved to the
archive mailbox, where its immutable id changes: CONTRACT.md section 4): a new message, as MIME, since only MIME
sets ``In-Reply-To``/``References`` (CONTRACT.md sections 4 and 6). It names the thread's Message-IDs, so the
contact's answer still finds the thread, and carries the subject Outlook gives a reply.
"""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

from sync_core.results import BadRequest
from sync_core.send_request import SendRequest

REFERENCES_KEPT = 10  # Message-IDs in References: the thread's first and its newest


def reply_subject(subject: str) -> str:
    """The subject Outlook gives a reply (one line: a stored subject may hold line breaks)."""
    line = " ".join(subject.split())
    return line if line[:3].lower() == "re:" else f"RE: {line}"


def mime_reply(request: SendRequest, thread_subject: str, message_ids: list[str]) -> bytes:
    """The reply as MIME: ``In-Reply-To`` the thread's last Message-ID, ``References`` its Message-IDs (oldest
    first, RFC 5322 section 3.6.4; a long thread keeps its first and newest, as mail clients trim it)."""
    ids = list(dict.fromkeys(message_ids))
    kept = ids if len(ids) <= REFERENCES_KEPT else [ids[0], *ids[-(REFERENCES_KEPT - 1) :]]
    mime = EmailMessage(policy=email.policy.SMTP)  # CRLF line ends, as MIME on the wire
    try:
        mime["To"] = ", ".join(request.recipients)
        if request.cc:
            mime["Cc"] = ", ".join(request.cc)
        if request.bcc:
            mime["Bcc"] = ", ".join(request.bcc)
    except ValueError:  # a line break in an address: it can be neither a header nor a recipient
        raise BadRequest("a recipient address cannot be written into a header", fields=[{"field": "to"}]) from None
    mime["Subject"] = reply_subject(thread_subject)
    mime["In-Reply-To"] = ids[-1]
    mime["References"] = " ".join(kept)
    if request.html is not None:
        mime.set_content(request.html, subtype="html")
    else:
        mime.set_content(request.text or "", subtype="plain")
    return mime.as_bytes()
