"""What Enrollio asks ``POST /api/send`` to send: the request model at the trust boundary (its attachments are
checked and measured in ``send_attachments``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sync_core.results import parse_body
from sync_core.routing import Kind

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    email: str = Field(pattern=EMAIL)
    name: str = ""


# A Content-ID (what the HTML's ``cid:`` references): one token of printable ASCII without spaces or angle
# brackets, so it can neither break a header (CR/LF) nor its own <...> framing.
CONTENT_ID = r"^[!-;=?-~]+$"


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    content_type: str = "application/octet-stream"
    content_base64: str
    is_inline: bool = False  # shown in the HTML body where it references ``cid:{content_id}``
    content_id: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=CONTENT_ID, validate_default=True
    )

    @field_validator("content_id")
    @classmethod
    def _inline_needs_content_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("is_inline"):
            raise ValueError("required when is_inline is true (the HTML body references it as cid:...)")
        return value


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    kind: Kind
    from_field: str | None = None
    contact: ContactIn
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    subject: str = ""
    html: str | None = None
    text: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    thread_id: str | None = None

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
