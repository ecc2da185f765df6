"""A reply whose thread has no message left in the mailbox to ``createReply`` on (deleted in Outlook, or moved to the
archive mailbox, where its immutable id changes: CONTRACT.md section 4): a new message, as MIME, since only MIME
sets ``In-Reply-To``/``References`` (CONTRACT.md sections 4 and 6). It names the thread's Message-IDs, so the
contact's answer still finds the thread, and carries the subject Outlook gives a reply.

The threading headers are written by hand, never by the ``email`` package's folder: Exchange's Message-IDs are 80
characters (CONTRACT.md section 4), and a header line that cannot fold within 78 characters is RFC 2047-encoded
there (``=?utf-8?q?=3C…?=``), which a structured field must not be and which then threads nothing. They stay as
written, ``References`` folded between ids, one per line, as Exchange writes it.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterable
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage

from sync_core.results import BadRequest
from sync_core.send_request import SendRequest

REFERENCES_KEPT = 10  # Message-IDs in References: the thread's first and its newest
# RFC 5322 section 3.6.4: "<" id-left "@" id-right ">", printable ASCII without spaces; short enough for one line
# of at most 998 characters with its header's name (section 2.1.1).
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
MAX_MESSAGE_ID = 998 - len("In-Reply-To: ")


def reply_subject(subject: str) -> str:
    """The subject Outlook gives a reply (one line: a stored subject may hold line breaks)."""
    line = " ".join(subject.split())
    return line if line[:3].lower() == "re:" else f"RE: {line}"


def is_message_id(value: str) -> bool:
    """Whether ``value`` can be written into In-Reply-To/References as it is (one ``<id-left@id-right>``)."""
    return len(value) <= MAX_MESSAGE_ID and _MESSAGE_ID.fullmatch(value) is not None


def threading_headers(message_ids: Iterable[str]) -> bytes:
    """``In-Reply-To`` the last Message-ID, ``References`` them all (oldest first, RFC 5322 section 3.6.4; a long
    thread keeps its first and newest, as mail clients trim it), folded between ids. An id that is not a
    Message-ID is left out (it could thread nothing); with none left, there are no threading headers."""
    ids = [i for i in dict.fromkeys(message_ids) if is_message_id(i)]
    if not ids:
        return b""
    kept = ids if len(ids) <= REFERENCES_KEPT else [ids[0], *ids[-(REFERENCES_KEPT - 1) :]]
    references = "\r\n ".join(kept)
    return f"In-Reply-To: {ids[-1]}\r\nReferences: {references}\r\n".encode("ascii")


def mime_address(address: str, field: str) -> Address:
    """One recipient as an address of a MIME header: an addr-spec, never a list ("a,b@x" is refused, not two
    recipients); an internationalised domain in its ASCII form (IDNA). A non-ASCII local part cannot be written
    without SMTPUTF8, so it is a 400 naming the field, as is anything else that is not one address."""
    local, _, domain = address.rpartition("@")
    try:
        if not local.isascii():
            raise ValueError("non-ASCII local part")
        return Address(addr_spec=f"{local}@{domain.encode('idna').decode('ascii')}")  # raises unless one addr-spec
    except (ValueError, UnicodeError, HeaderParseError):
        raise BadRequest(
            f"{field}: '{address}' cannot be written as one address in the MIME of a reply", fields=[{"field": field}]
        ) from None


def mime_reply(request: SendRequest, thread_subject: str, message_ids: list[str]) -> bytes:
    """The reply as MIME, naming the thread's Message-IDs (``threading_headers``)."""
    mime = EmailMessage(policy=email.policy.SMTP)  # CRLF line ends, as MIME on the wire
    to = [f"to.{i}" for i in range(len(request.to))] or ["contact.email"]  # recipients: to, else the contact
    for header, fields, addresses in [
        ("To", to, request.recipients),
        ("Cc", [f"cc.{i}" for i in range(len(request.cc))], request.cc),
        ("Bcc", [f"bcc.{i}" for i in range(len(request.bcc))], request.bcc),
    ]:
        if addresses:
            mime[header] = [mime_address(a, f) for a, f in zip(addresses, fields, strict=True)]
    mime["Subject"] = reply_subject(thread_subject)
    if request.html is not None:
        mime.set_content(request.html, subtype="html")
    else:
        mime.set_content(request.text or "", subtype="plain")
    return threading_headers(message_ids) + mime.as_bytes()
