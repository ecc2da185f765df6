"""Enrollio threads and their synced messages: the records, and the keys they are found by."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from sync_core.matching import Direction


def key_of(value: str) -> str:
    """A table-safe, fixed-length key for a conversationId or Message-ID (they may hold '/', '#', '?')."""
    return hashlib.sha256(value.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Contact:
    email: str
    name: str = ""
    contact_id: str = ""


@dataclass(frozen=True)
class Thread:
    thread_id: str
    user_id: str
    account_id: str
    connection_id: str
    contact: Contact
    conversation_id: str
    subject: str
    first_message_id: str  # the Enrollio-sent first message's Message-ID
    created_at: dt.datetime
    latest_graph_id: str = ""  # the newest message's immutable id, for createReply


@dataclass(frozen=True)
class StoredAttachment:
    name: str
    size: int
    content_type: str
    is_inline: bool = False
    blob: str | None = None  # bytes in the attachments container
    link: str | None = None  # a reference attachment: kept as a link
    content_id: str | None = None  # an inline image's Content-ID: the HTML body shows it where it says cid:...


@dataclass(frozen=True)
class StoredMessage:
    thread_id: str
    internet_message_id: str
    graph_id: str
    direction: Direction
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    sent_at: dt.datetime
    body_blob: str
    body_content_type: str
    attachments: tuple[StoredAttachment, ...] = field(default_factory=tuple)
    origin: str = "outlook"  # "enrollio" when sent through /api/send
    depth: int = 0  # reply level in the conversation (orders messages stamped with the same second)
    correlation_id: str = ""  # the notification (or send) that stored it (sync_core.telemetry)

    @property
    def key(self) -> str:
        return key_of(self.internet_message_id)


@dataclass(frozen=True)
class SkipRecord:
    user_id: str
    thread_id: str
    connection_id: str
    internet_message_id: str
    direction: Direction
    reason: str
    details: tuple[dict[str, object], ...]
    subject: str
    at: dt.datetime
