"""What a use case answers, independent of Azure Functions. ``function_app.py`` maps these to HTTP in one place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# A media type as RFC 6838 section 4.2 names them (type/subtype of restricted-name characters), with optional
# token or quoted-string parameters (RFC 9110 section 8.3.1), ASCII only: nothing that could end a header line
# or fail to encode in one.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_PARAMETER = (
    r"""[ \t]*;[ \t]*[A-Za-z0-9!#$%&'*+.^_`|~-]+=(?:[A-Za-z0-9!#$%&'*+.^_`|~-]+|"[\x20\x21\x23-\x5b\x5d-\x7e]*")"""
)
MEDIA_TYPE = rf"^{_NAME}/{_NAME}(?:{_PARAMETER})*$"
OPAQUE = "application/octet-stream"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds a surrogate only unpaired (json.loads pairs them)


@dataclass(frozen=True)
class Redirect:
    location: str
    set_cookie: str = ""  # one Set-Cookie header value, when the redirect starts a browser-bound flow


@dataclass(frozen=True)
class Page:
    """A short human-readable page (a browser is on the other end)."""

    status: int
    title: str
    text: str


@dataclass(frozen=True)
class Json:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlainText:
    status: int
    text: str


@dataclass(frozen=True)
class Binary:
    """Bytes to download (an attachment)."""

    data: bytes
    content_type: str
    filename: str

    @property
    def safe_content_type(self) -> str:
        """The stored type when it is a media type, else opaque bytes (an inbound sender chose the stored one)."""
        fits = len(self.content_type) <= 255 and re.fullmatch(MEDIA_TYPE, self.content_type)
        return self.content_type if fits else OPAQUE

    @property
    def content_disposition(self) -> str:
        """Always a download, the name percent-encoded as UTF-8 (RFC 6266 ``filename*``). A lone surrogate (JSON
        allows "\\ud800", so Graph's may carry one; UTF-8 cannot encode it) becomes U+FFFD rather than a 500."""
        name = _LONE_SURROGATE.sub("\ufffd", self.filename)
        return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


Result = Redirect | Page | Json | PlainText | Binary


class Problem(Exception):
    """A request that cannot be served, with the status and a message naming what is wrong."""

    status = 400
    retry_after: float | None = None  # seconds, for a 503 the caller may retry (sent as Retry-After)

    def __init__(self, message: str, *, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class BadRequest(Problem):
    status = 400


class Forbidden(Problem):
    status = 403


class NotFound(Problem):
    status = 404


def parse_body(model: type[M], body: bytes, what: str) -> M:
    """Validate a JSON body against ``model``; a 400 naming every bad field otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _bad(exc, what) from None


def parse_fields(model: type[M], values: Mapping[str, str], what: str) -> M:
    """Validate query or form fields against ``model``; a 400 naming every bad field otherwise."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise _bad(exc, what) from None


def _bad(exc: ValidationError, what: str) -> BadRequest:
    fields = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "error": e["msg"]} for e in exc.errors()]
    return BadRequest(f"invalid {what}: {', '.join(f['field'] for f in fields)}", fields=fields)
