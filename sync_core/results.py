"""What a use case answers, independent of Azure Functions. ``function_app.py`` maps these to HTTP in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Redirect:
    location: str


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


Result = Redirect | Page | Json | PlainText


class Problem(Exception):
    """A request that cannot be served, with the status and a message naming what is wrong."""

    status = 400

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
