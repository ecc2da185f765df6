"""What Enrollio asks ``POST /api/send`` to send: the request model at the trust boundary, and its attachments
decoded and capped before anything reaches Graph (R9: an attachment over the cap is a 413 naming the file)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync_core.results import BadRequest, Problem, parse_body
from sync_core.routing import Kind

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    email: str = Field(pattern=EMAIL)
    name: str = ""


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    content_type: str = "application/octet-stream"
    content_base64: str


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


class PayloadTooLarge(Problem):
    status = 413


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


def parse_request(body: bytes) -> SendRequest:
    return parse_body(SendRequest, body, "send request")


def decode_attachments(request: SendRequest, cap: int) -> list[Attachment]:
    """Decode and cap every attachment before anything reaches Graph (R9: 413 naming the file)."""
    out = []
    for index, item in enumerate(request.attachments):
        try:
            data = base64.b64decode(item.content_base64, validate=True)
        except binascii.Error:
            raise BadRequest(
                f"attachment '{item.name}' is not valid base64",
                fields=[{"field": f"attachments.{index}.content_base64"}],
            ) from None
        if len(data) > cap:
            raise PayloadTooLarge(
                f"attachment '{item.name}' is {len(data)} bytes; the limit is {cap} bytes",
                fields=[{"field": f"attachments.{index}", "name": item.name, "size": str(len(data))}],
            )
        out.append(Attachment(item.name, item.content_type, data))
    return out
