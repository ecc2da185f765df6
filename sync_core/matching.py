"""What a fetched Graph message means for Enrollio's threads: the pure decision at the heart of inbound sync.

R4: only threads Enrollio started sync; a message that matches none is ignored and nothing of it is stored.
R8: a message received before the connection's ``sync_from`` (its first sign-in, or the sign-in after a
disconnect) is ignored the same way, however it is met: a catch-up's delta still reports changes to older messages
(a read flag) whatever its ``receivedDateTime`` filter, so the filter alone does not keep that mail out.
R10 + guard: ``conversationId`` finds the candidate thread, accepted only when the thread's contact takes part
in the message or the message references one of the thread's Message-IDs (a colliding or recycled
conversation does not leak unrelated mail in). ``In-Reply-To``/``References`` match on their own when Outlook
split the conversation (e.g. a changed subject): the new conversationId becomes an alias of the thread.
R5: the mailbox's own messages are outbound (the user replied in Outlook), all others inbound. Own means in
its Sent Items folder, or from (or sent by) its address: a reply sent as an alias or send-as address is only
recognised by its folder. Graph returns no Internet headers for the Sent Items copy (CONTRACT.md section 4), so
an own message that matches no thread is looked at again with the threading headers of its MIME
(``needs_mime_headers``): a reply with a changed subject, to another address of the contact, a forward.
R9: any attachment over the cap stops the message from syncing, with a reason naming each one. Graph's ``size``
is larger than the file (Exchange's overhead, CONTRACT.md section 5), so it decides alone only far over the cap;
nearer, the bytes decide as they are downloaded (``inbound``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum

MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# How much more than the file Graph's attachment ``size`` may say (CONTRACT.md section 5: an 816-byte file is
# 1,053, 237 bytes of overhead): generous, so no file under the cap is ever skipped on ``size`` alone.
SIZE_OVERHEAD_ALLOWANCE = 64 * 1024


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class AttachmentMeta:
    attachment_id: str
    name: str
    size: int
    content_type: str
    is_inline: bool
    kind: str  # "file", "item" or "reference" (from @odata.type)
    content_id: str | None = None  # an inline image's Content-ID (the HTML body says cid:...)


@dataclass(frozen=True)
class MailMessage:
    """The fields of a Graph message that sync decides on (parsed at the trust boundary)."""

    graph_id: str
    conversation_id: str
    internet_message_id: str
    subject: str
    from_address: str
    recipients: tuple[str, ...]  # to + cc + bcc addresses
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    is_draft: bool = False
    attachments: tuple[AttachmentMeta, ...] = ()
    sender_address: str = ""  # the account actually used (differs from ``from`` for send-on-behalf)
    parent_folder_id: str = ""
    received_at: dt.datetime | None = None  # Graph's receivedDateTime (the Sent Items copy: when it was sent)

    @property
    def referenced_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.in_reply_to, *self.references)))

    @property
    def participants(self) -> frozenset[str]:
        return frozenset(a.lower() for a in (self.from_address, *self.recipients) if a)


@dataclass(frozen=True)
class ThreadRef:
    """What matching needs to know of an Enrollio thread."""

    thread_id: str
    contact_email: str
    message_ids: frozenset[str] = field(default_factory=frozenset)  # known Message-IDs of the thread


@dataclass(frozen=True)
class Ignore:
    reason: str  # "draft", "before_sync_from", "no_thread": nothing about the message is stored


@dataclass(frozen=True)
class Skip:
    """A message of an Enrollio thread that will not sync, and why (shown to the user)."""

    thread_id: str
    direction: Direction
    reason: str
    details: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True)
class Store:
    thread_id: str
    direction: Direction
    new_alias: str | None = None  # a conversationId to record as pointing at this thread


Decision = Ignore | Skip | Store


def parse_message_ids(header_value: str | None) -> tuple[str, ...]:
    """Message-IDs from an In-Reply-To or References header (RFC 5322 ``<id@host>`` tokens)."""
    return tuple(MESSAGE_ID.findall(header_value or ""))


def direction_of(message: MailMessage, mailbox_address: str, sent_items_folder_id: str = "") -> Direction:
    """R5: outbound when the mailbox sent it (its Sent Items folder, or its own address), else inbound."""
    if sent_items_folder_id and message.parent_folder_id == sent_items_folder_id:
        return Direction.OUTBOUND
    own = mailbox_address.lower()
    sent_by = {message.from_address.lower(), message.sender_address.lower()}
    return Direction.OUTBOUND if own in sent_by else Direction.INBOUND


def needs_mime_headers(
    message: MailMessage, decision: Decision, mailbox_address: str, sent_items_folder_id: str = ""
) -> bool:
    """Whether to read the threading headers from the message's MIME: the mailbox's own message matched no
    thread, and Graph gave no In-Reply-To/References for it (none for the Sent Items copy, CONTRACT.md 4)."""
    return (
        decision == Ignore("no_thread")
        and not message.referenced_ids
        and direction_of(message, mailbox_address, sent_items_folder_id) is Direction.OUTBOUND
    )


def _guarded(message: MailMessage, thread: ThreadRef) -> bool:
    return thread.contact_email.lower() in message.participants or bool(
        thread.message_ids.intersection(message.referenced_ids)
    )


def decide(
    message: MailMessage,
    mailbox_address: str,
    by_conversation: ThreadRef | None,
    by_reference: ThreadRef | None,
    cap_bytes: int,
    sent_items_folder_id: str = "",
    sync_from: dt.datetime | None = None,
) -> Decision:
    """Decide what to do with ``message``, fetched from the mailbox ``mailbox_address``.

    ``by_conversation``: the thread recorded for the message's conversationId, if any. ``by_reference``: the
    thread owning one of the message's In-Reply-To/References Message-IDs, if any. ``sent_items_folder_id``:
    the id of the mailbox's Sent Items folder, when known. ``sync_from``: the connection's start (R8).
    """
    if message.is_draft:
        return Ignore("draft")
    if sync_from is not None and message.received_at is not None and message.received_at < sync_from:
        return Ignore("before_sync_from")  # R8: mail of a disconnected time (or from before the first sign-in)
    new_alias = None
    if by_conversation is not None and _guarded(message, by_conversation):
        thread = by_conversation
    elif by_reference is not None:
        thread = by_reference
        new_alias = message.conversation_id or None
    else:
        return Ignore("no_thread")
    direction = direction_of(message, mailbox_address, sent_items_folder_id)
    too_large = tuple(
        too_large_detail(a, cap_bytes)
        for a in message.attachments
        # A reference's size is its metadata, not the file; nearer the cap, the downloaded bytes decide.
        if a.kind != "reference" and a.size > cap_bytes + SIZE_OVERHEAD_ALLOWANCE
    )
    if too_large:
        return Skip(thread.thread_id, direction, "attachment_too_large", too_large)
    return Store(thread.thread_id, direction, new_alias)


def too_large_detail(
    attachment: AttachmentMeta, cap_bytes: int, measured: int | None = None, whole: bool = True
) -> dict[str, object]:
    """What a skip row says of an attachment over the cap: its name, the cap, the size Graph reports for it
    (``graph_size``: Exchange's count, somewhat more than the file) and, when its bytes were counted as they
    were downloaded, how many there were (``measured_size``) or, when reading stopped, at least how many
    (``measured_at_least``)."""
    detail: dict[str, object] = {"name": attachment.name, "cap": cap_bytes, "graph_size": attachment.size}
    if measured is not None:
        detail["measured_size" if whole else "measured_at_least"] = measured
    return detail
