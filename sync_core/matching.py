"""What a fetched Graph message means for Enrollio's threads: the pure decision at the heart of inbound sync.

R4: only threads Enrollio started sync; a message that matches none is ignored and nothing of it is stored.
R10 + guard: ``conversationId`` finds the candidate thread, accepted only when the thread's contact takes part
in the message or the message references one of the thread's Message-IDs (a colliding or recycled
conversation does not leak unrelated mail in). ``In-Reply-To``/``References`` match on their own when Outlook
split the conversation (e.g. a changed subject): the new conversationId becomes an alias of the thread.
R5: messages from the mailbox's own address are outbound (the user replied in Outlook), all others inbound.
R9: any attachment over the cap stops the message from syncing, with a reason naming each one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

MESSAGE_ID = re.compile(r"<[^<>\s]+>")


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
    reason: str  # "draft", "no_thread": nothing about the message is stored


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
) -> Decision:
    """Decide what to do with ``message``, fetched from the mailbox ``mailbox_address``.

    ``by_conversation``: the thread recorded for the message's conversationId, if any. ``by_reference``: the
    thread owning one of the message's In-Reply-To/References Message-IDs, if any.
    """
    if message.is_draft:
        return Ignore("draft")
    new_alias = None
    if by_conversation is not None and _guarded(message, by_conversation):
        thread = by_conversation
    elif by_reference is not None:
        thread = by_reference
        new_alias = message.conversation_id or None
    else:
        return Ignore("no_thread")
    direction = Direction.OUTBOUND if message.from_address.lower() == mailbox_address.lower() else Direction.INBOUND
    too_large = tuple(
        {"name": a.name, "size": a.size, "cap": cap_bytes}
        for a in message.attachments
        if a.kind != "reference" and a.size > cap_bytes  # a reference's size is its metadata, not the file
    )
    if too_large:
        return Skip(thread.thread_id, direction, "attachment_too_large", too_large)
    return Store(thread.thread_id, direction, new_alias)
