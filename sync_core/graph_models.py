"""Graph payloads at the trust boundary: pydantic models for what sync reads of a message (CONTRACT.md s.4, s.5)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sync_core.matching import AttachmentMeta, MailMessage, parse_message_ids
from sync_core.subscriptions import parse_iso

# One GET per message: exactly what sync needs, headers included (returned only when selected), and the
# attachments' metadata without their bytes (CONTRACT.md section 5, "Getting size without downloading bytes").
MESSAGE_SELECT = (
    "id,conversationId,conversationIndex,internetMessageId,internetMessageHeaders,subject,from,sender,toRecipients,ccRecipients,"
    "bccRecipients,body,isDraft,sentDateTime,receivedDateTime,parentFolderId"
)
# contentId is a fileAttachment's property: a bare "contentId" is unknown on the base type, so it is selected
# with the type cast (CONTRACT.md section 5). Inline images keep it, so Enrollio can place them (cid:...).
ATTACHMENTS_EXPAND = "attachments($select=id,name,size,contentType,isInline,microsoft.graph.fileAttachment/contentId)"
# The same without the type cast, should Graph refuse it (``content_ids``).
ATTACHMENTS_EXPAND_PLAIN = "attachments($select=id,name,size,contentType,isInline)"
# Enough to tell which thread a message belongs to, when the full GET above keeps failing for it: its threading
# headers too (a reply with a changed subject matches by them alone), and when it arrived (R8).
IDENTIFY_SELECT = (
    "id,conversationId,internetMessageId,internetMessageHeaders,subject,from,sender,toRecipients,ccRecipients,"
    "isDraft,parentFolderId,receivedDateTime"
)


def conversation_depth(conversation_index: str) -> int:
    """How many replies deep a message sits in its conversation: Exchange's index is a 22-byte header plus 5
    bytes per reply. It orders messages that Graph stamps with the same second."""
    try:
        size = len(base64.b64decode(conversation_index or "", validate=True))
    except (binascii.Error, ValueError):
        return 0
    return max(0, (size - 22) // 5)


def _moment(stamp: str | None) -> dt.datetime | None:
    """A Graph timestamp, or None when it is missing or not one (then nothing is decided on it)."""
    try:
        return parse_iso(stamp) if stamp else None
    except ValueError:
        return None


# Graph's ids (a message's immutable id is about 150 characters, a conversationId about 80): an answer beyond this is
# not one this service stores (a table property holds 32K characters), and is refused here as unreadable.
GraphId = Annotated[str, StringConstraints(max_length=2048)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class EmailAddress(_Model):
    address: str = ""
    name: str = ""


class Recipient(_Model):
    emailAddress: EmailAddress = Field(default_factory=EmailAddress)


class Body(_Model):
    contentType: Annotated[str, StringConstraints(max_length=16)] = "html"  # "html" or "text" (bodyType)
    content: str = ""


class Header(_Model):
    name: str
    value: str = ""


class GraphAttachment(_Model):
    odata_type: str = Field(default="#microsoft.graph.fileAttachment", alias="@odata.type")
    id: str
    name: str = ""
    size: int = 0
    contentType: str | None = None
    isInline: bool = False
    contentId: str | None = None

    @property
    def kind(self) -> str:
        suffix = self.odata_type.rsplit(".", 1)[-1]
        return {"fileAttachment": "file", "itemAttachment": "item", "referenceAttachment": "reference"}.get(
            suffix, "file"
        )


class GraphMessage(_Model):
    id: GraphId
    conversationId: GraphId = ""
    conversationIndex: str = ""  # base64; grows by 5 bytes per reply level (CONTRACT.md section 4)
    internetMessageId: str = ""
    internetMessageHeaders: list[Header] = Field(default_factory=list)
    subject: str | None = ""
    from_: Recipient | None = Field(default=None, alias="from")
    sender: Recipient | None = None
    toRecipients: list[Recipient] = Field(default_factory=list)
    ccRecipients: list[Recipient] = Field(default_factory=list)
    bccRecipients: list[Recipient] = Field(default_factory=list)
    body: Body = Field(default_factory=Body)
    isDraft: bool = False
    sentDateTime: str | None = None
    receivedDateTime: str | None = None
    parentFolderId: GraphId = ""
    attachments: list[GraphAttachment] = Field(default_factory=list)

    @property
    def depth(self) -> int:
        return conversation_depth(self.conversationIndex)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((h.value for h in self.internetMessageHeaders if h.name.lower() == wanted), None)

    @property
    def from_address(self) -> str:
        who = self.from_ or self.sender
        return who.emailAddress.address if who else ""

    @property
    def sent_at(self) -> dt.datetime:
        stamp = self.sentDateTime or self.receivedDateTime
        return parse_iso(stamp) if stamp else dt.datetime.now(dt.UTC)

    def addresses(self, recipients: list[Recipient]) -> tuple[str, ...]:
        return tuple(r.emailAddress.address for r in recipients if r.emailAddress.address)

    def to_mail_message(self) -> MailMessage:
        return MailMessage(
            graph_id=self.id,
            conversation_id=self.conversationId,
            internet_message_id=self.internetMessageId,
            subject=self.subject or "",
            from_address=self.from_address,
            recipients=(
                *self.addresses(self.toRecipients),
                *self.addresses(self.ccRecipients),
                *self.addresses(self.bccRecipients),
            ),
            in_reply_to=parse_message_ids(self.header("In-Reply-To")),
            references=parse_message_ids(self.header("References")),
            is_draft=self.isDraft,
            sender_address=self.sender.emailAddress.address if self.sender else "",
            parent_folder_id=self.parentFolderId,
            received_at=_moment(self.receivedDateTime),
            attachments=tuple(
                AttachmentMeta(
                    a.id, a.name, a.size, a.contentType or "application/octet-stream", a.isInline, a.kind, a.contentId
                )
                for a in self.attachments
            ),
        )
