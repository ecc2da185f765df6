"""What a use case answers, independent of Azure Functions. ``function_app.py`` maps these to HTTP in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "error": e["msg"]} for e in exc.errors()]
        raise BadRequest(f"invalid {what}: {', '.join(f['field'] for f in fields)}", fields=fields) from None
