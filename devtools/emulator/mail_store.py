"""The mail data of the emulator's world: folders, messages, attachments, and the change history delta reads.

Pure data and state transitions, no HTTP. Callers hold ``World.lock`` around every call and publish the returned
``Change``s after releasing it, so a listener that reads the store sees the state the change describes.

Ids follow Exchange (CONTRACT.md section 4, "Immutable IDs"): every message has an immutable id, which never
changes within the mailbox, and a REST id, which changes whenever the message moves to another folder. Both
resolve the message; which one a response shows depends on the request's ``Prefer: IdType="ImmutableId"``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Literal

from devtools.emulator.state import Change, ChangeType, Mailbox, World

AttachmentKind = Literal["file", "item", "reference"]
# Graph's attachment size is larger than the file: "an 816-byte file is reported as 1,053 bytes" (CONTRACT.md
# section 5). Assumption: a fixed 237 bytes for every file and item attachment, the one documented example; real
# Exchange counts the attachment's own properties, so clients must never subtract a number like this one.
# An item attachment (an attached email) is different: its $value is MIME (CONTRACT.md section 5), which carries the
# item's own attachments base64-encoded, a third larger than their bytes (RFC 2045 section 6.8), with line breaks
# and part headers. Assumption (not documented): Graph's size counts the item as Exchange stores it (its text and
# its attachments' bytes, plus the overhead), so an attached email carrying a file has a $value larger than its
# size; a client that caps the bytes it stores must measure the MIME, not trust the size.
ATTACHMENT_SIZE_OVERHEAD = 1053 - 816

# Well-known folder names, usable wherever a folder id is (D api-reference/v1.0/resources/mailfolder.md).
WELL_KNOWN_FOLDERS = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
}


class MailError(Exception):
    """A Graph error answer (status, ``error.code``, message naming the offending field)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(field: str, problem: str, code: str = "RequestBodyRead") -> MailError:
    return MailError(400, code, f"Invalid value for '{field}': {problem}")


def utcnow() -> dt.datetime:
    """Now, kept to the microsecond: Graph shows whole seconds (``fmt_time``), but Exchange keeps finer times, and
    a ``receivedDateTime ge`` filter compares them (assumption: the docs show only the whole seconds)."""
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str, size: int = 30) -> str:
    """An opaque, URL-safe id in the style of Exchange's base64 ids (e.g. ``AAMkAD...AAA=``)."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(size)).decode().rstrip("=") + "AAA="


@dataclass(frozen=True)
class Address:
    """An ``emailAddress``: the name may be empty."""

    address: str
    name: str = ""


@dataclass
class Attachment:
    id: str
    kind: AttachmentKind
    name: str
    content_type: str
    content: bytes  # file: the file; item: the attached message as MIME; reference: nothing
    is_inline: bool = False
    content_id: str | None = None
    last_modified: dt.datetime = field(default_factory=utcnow)
    stored_size: int | None = None  # an item: its size as Exchange stores it (text and files), not its MIME's

    @property
    def size(self) -> int:
        """What Graph reports as ``size`` (CONTRACT.md section 5): more than the bytes, by Exchange's overhead; for an
        item, its stored size (its MIME is larger, see above); for a referenceAttachment, the size of its
        metadata, not of the file."""
        if self.kind == "reference":
            return 160 + len(self.name.encode())
        stored = self.stored_size if self.stored_size is not None else len(self.content)
        return stored + ATTACHMENT_SIZE_OVERHEAD


@dataclass
class Message:
    immutable_id: str
    rest_id: str
    folder_id: str
    subject: str
    body: str
    body_type: Literal["html", "text"]
    internet_message_id: str
    conversation_id: str
    conversation_index: bytes
    from_: Address | None = None
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)  # internetMessageHeaders, in order
    # The sender's own copy (Sent Items): Graph returns no internetMessageHeaders for it, they are only in its
    # MIME (CONTRACT.md section 4).
    sender_copy: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    importance: str = "normal"
    flag_status: str = "notFlagged"
    is_draft: bool = False
    is_read: bool = False
    created: dt.datetime = field(default_factory=utcnow)
    modified: dt.datetime = field(default_factory=utcnow)
    received: dt.datetime = field(default_factory=utcnow)
    sent: dt.datetime | None = None
    seq: int = 0  # the mailbox change sequence of this message's latest change (delta and etags read it)

    @property
    def change_key(self) -> str:
        digest = hashlib.sha256(f"{self.immutable_id}/{self.seq}".encode()).digest()[:18]
        return "CQAAABYAAA" + base64.b64encode(digest).decode()

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def attachment(self, attachment_id: str) -> Attachment | None:
        return next((a for a in self.attachments if a.id == attachment_id), None)


@dataclass
class Folder:
    id: str
    well_known: str
    display_name: str


@dataclass(frozen=True)
class Tombstone:
    """A message that left a folder (moved out or deleted), kept so delta can report ``@removed``."""

    immutable_id: str
    rest_id: str  # the REST id the message had while it was in the folder
    seq: int


@dataclass
class MailboxData:
    """One mailbox's folders and messages, and the change sequence that orders every change to them."""

    mailbox: Mailbox
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)  # by immutable id
    tombstones: dict[str, dict[str, Tombstone]] = field(default_factory=dict)  # folder id -> immutable id -> ...
    # The user's archive mailbox, by its own immutable ids: Graph v1.0 does not serve it (CONTRACT.md section 4).
    archived: dict[str, Message] = field(default_factory=dict)
    seq: int = 0
    delta_epoch: int = 0  # bumped to expire every delta token of the mailbox (410 Gone on next use)

    def __post_init__(self) -> None:
        for name, display in WELL_KNOWN_FOLDERS.items():
            folder = Folder(new_id("AAMkAGI2AAEM", 12), name, display)
            self.folders[folder.id] = folder
            self.tombstones[folder.id] = {}

    def folder(self, id_or_name: str) -> Folder | None:
        """A folder by id or (case-insensitively) by well-known name."""
        if found := self.folders.get(id_or_name):
            return found
        wanted = id_or_name.lower()
        return next((f for f in self.folders.values() if f.well_known == wanted), None)

    def well_known(self, name: str) -> Folder:
        folder = self.folder(name)
        assert folder is not None, name
        return folder

    def message(self, any_id: str) -> Message | None:
        """A message by immutable id or by its current REST id (an id from before a move no longer resolves)."""
        if found := self.messages.get(any_id):
            return found
        return next((m for m in self.messages.values() if m.rest_id == any_id), None)

    def by_internet_message_id(self, internet_message_id: str) -> Message | None:
        return next((m for m in self.messages.values() if m.internet_message_id == internet_message_id), None)

    def in_folder(self, folder_id: str) -> list[Message]:
        return sorted((m for m in self.messages.values() if m.folder_id == folder_id), key=lambda m: m.seq)

    def _bump(self, message: Message) -> int:
        self.seq += 1
        message.seq = self.seq
        message.modified = utcnow()
        return self.seq

    def _change(self, change_type: ChangeType, message: Message) -> Change:
        return Change(change_type, self.mailbox.id, message.folder_id, "message", message.immutable_id, message.etag)

    def insert(self, message: Message) -> list[Change]:
        """Add a new message to its folder."""
        self._bump(message)
        self.messages[message.immutable_id] = message
        self.tombstones[message.folder_id].pop(message.immutable_id, None)
        return [self._change("created", message)]

    def touch(self, message: Message) -> list[Change]:
        """Record that ``message`` changed in place (read state, flag, attachments, ...)."""
        self._bump(message)
        return [self._change("updated", message)]

    def move(self, message: Message, folder: Folder) -> list[Change]:
        """Move to ``folder``: a new REST id, ``deleted`` in the old folder and ``created`` in the new one."""
        if folder.id == message.folder_id:
            return []
        old_folder, old_rest_id = message.folder_id, message.rest_id
        seq = self._bump(message)
        self.tombstones[old_folder][message.immutable_id] = Tombstone(message.immutable_id, old_rest_id, seq)
        self.tombstones[folder.id].pop(message.immutable_id, None)
        removed = Change("deleted", self.mailbox.id, old_folder, "message", message.immutable_id, message.etag)
        message.folder_id, message.rest_id = folder.id, new_id("AAMkAGI2TG")
        return [removed, self._change("created", message)]

    def delete(self, message: Message) -> list[Change]:
        seq = self._bump(message)
        self.tombstones[message.folder_id][message.immutable_id] = Tombstone(message.immutable_id, message.rest_id, seq)
        del self.messages[message.immutable_id]
        return [self._change("deleted", message)]

    def archive(self, message: Message) -> tuple[Message, list[Change]]:
        """Move ``message`` to the user's archive mailbox: it leaves this mailbox (``deleted`` here) and lives on
        there under a new immutable id ("it changes if the item moves to the archive mailbox", section 4)."""
        changes = self.delete(message)
        kept = copy.deepcopy(message)
        kept.immutable_id, kept.rest_id = new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC"), new_id("AAMkAGI2TG")
        self.archived[kept.immutable_id] = kept
        return kept, changes


@dataclass(frozen=True)
class OutboundDelivery:
    """A message that left the emulator for recipients outside it (the contact's side of the world)."""

    mailbox_id: str
    sender: str
    recipients: tuple[str, ...]  # the external addresses it went to
    message: Message  # a snapshot of the sent message

    def to_json(self) -> dict[str, object]:
        m = self.message
        return {
            "mailboxId": self.mailbox_id,
            "from": self.sender,
            "recipients": list(self.recipients),
            "to": [a.address for a in m.to],
            "cc": [a.address for a in m.cc],
            "subject": m.subject,
            "body": {"contentType": m.body_type, "content": m.body},
            "internetMessageId": m.internet_message_id,
            "inReplyTo": m.header("In-Reply-To"),
            "references": m.header("References"),
            "sentDateTime": (m.sent or m.created).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "attachments": [
                {
                    "name": a.name,
                    "size": len(a.content),
                    "contentType": a.content_type,
                    "isInline": a.is_inline,
                    "contentId": a.content_id,
                    "sha256": hashlib.sha256(a.content).hexdigest(),  # what the contact received, byte for byte
                }
                for a in m.attachments
            ],
        }


@dataclass
class MailStore:
    """All mailboxes' mail, kept on ``world.ext["mail"]``."""

    world: World
    boxes: dict[str, MailboxData] = field(default_factory=dict)
    outbound: list[OutboundDelivery] = field(default_factory=list)

    @classmethod
    def of(cls, world: World) -> MailStore:
        with world.lock:
            store = world.ext.setdefault("mail", cls(world))
            assert isinstance(store, MailStore)
            return store

    def box(self, mailbox: Mailbox) -> MailboxData:
        """The mail of ``mailbox``, created with its well-known folders on first use."""
        if (data := self.boxes.get(mailbox.id)) is None:
            data = self.boxes[mailbox.id] = MailboxData(mailbox)
        return data

    def box_of(self, id_or_address: str) -> MailboxData | None:
        mailbox = self.world.mailbox(id_or_address)
        return self.box(mailbox) if mailbox else None
