"""What Enrollio asks ``POST /api/send`` to send: the request model at the trust boundary (its attachments are
checked and measured in ``send_attachments``).

Every field is bounded here, so a request either fits what Graph and storage accept or is a 400 naming the field:
ids are table-safe (``sync_core.ids``); single-line text has no control characters; lists are counted. The stored
message row keeps what does not fit a table property (long recipient lists, many long attachment labels) whole in
a blob beside it (``thread_store``), so no limit here exists for the row's sake. An attachment's size is not
bounded here but by the whole message's ``MAX_MESSAGE_BYTES`` (a 413 in ``send_attachments``), and ``html`` or
``text`` by ``MAX_BODY`` characters.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

from sync_core.ids import OptionalTableKey, TableKey
from sync_core.results import MEDIA_TYPE, parse_body
from sync_core.routing import Kind

_NO_CONTROL = r"[^\x00-\x1f\x7f-\x9f]"
# One addr-spec (RFC 5322 section 3.4.1), never a list or a name-addr: no white space, control characters or the
# specials that separate or frame addresses (``,;:<>()[]\"``), so "a,evil@x.io" is refused, not two recipients.
_ADDRESS_CHAR = r'[^@\s\x00-\x1f\x7f-\x9f,;:<>()\[\]\\"]'
EMAIL = rf"^{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+$"
MAX_ADDRESS = 254  # RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, its angle brackets included
MAX_RECIPIENTS = 100  # per list; Exchange Online takes 500 per message (CONTRACT.md section 4), rows stay small
MAX_SUBJECT = 998  # RFC 5322 section 2.1.1's line limit: far above a real subject, far below a table property
MAX_NAME = 256
MAX_BODY = 3 * 1024 * 1024  # characters; the draft travels to Graph in one JSON request (CONTRACT.md section 5)
MAX_ATTACHMENTS = 50

Address = Annotated[str, StringConstraints(max_length=MAX_ADDRESS, pattern=EMAIL)]
# One line of text: no control characters (CR/LF included), bounded.
Subject = Annotated[str, StringConstraints(max_length=MAX_SUBJECT, pattern=rf"^{_NO_CONTROL}*$")]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME, pattern=rf"^{_NO_CONTROL}*$")]
FileName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=rf"^{_NO_CONTROL}+$")]
MediaType = Annotated[str, StringConstraints(max_length=255, pattern=MEDIA_TYPE)]
Body = Annotated[str, StringConstraints(max_length=MAX_BODY)]
Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]  # RFC 4648 section 4
# A Content-ID (what the HTML's ``cid:`` references): one token of printable ASCII without spaces or angle
# brackets, so it can neither break a header (CR/LF) nor its own <...> framing.
CONTENT_ID = r"^[!-;=?-~]+$"
ContentId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=CONTENT_ID)]


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: OptionalTableKey = ""
    email: Address
    name: Name = ""


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FileName
    content_type: MediaType = "application/octet-stream"
    content_base64: Base64  # its size is bounded by MAX_MESSAGE_BYTES (send_attachments), not here
    is_inline: bool = False  # shown in the HTML body where it references ``cid:{content_id}``
    content_id: ContentId | None = Field(default=None, validate_default=True)

    @field_validator("content_id")
    @classmethod
    def _inline_needs_content_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("is_inline"):
            raise ValueError("required when is_inline is true (the HTML body references it as cid:...)")
        return value


class SendRequest(BaseModel):
    # The document says what _has_body checks: html, text or both.
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["html"]}, {"required": ["text"]}]}
    )
    user_id: TableKey
    account_id: TableKey
    kind: Kind
    from_field: Name | None = None
    contact: ContactIn
    to: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: Subject = ""
    html: Body | None = None
    text: Body | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    thread_id: TableKey | None = None

    @model_validator(mode="after")
    def _has_body(self) -> SendRequest:
        if self.html is None and self.text is None:
            raise ValueError("give html or text (or both)")
        return self

    @property
    def recipients(self) -> list[str]:
        return self.to or [self.contact.email]


def parse_request(body: bytes) -> SendRequest:
    return parse_body(SendRequest, body, "send request")
