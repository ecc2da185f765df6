"""One vocabulary for what went wrong, used by every queue worker and by the catch-up.

- ``Transient``: may mend on its own (Graph throttling or a 5xx, a storage or network blip): retry later,
  politely (``retry_after`` when Graph said how long).
- ``Permanent``: fails the same way every time for this item (Graph refusing one message with a 4xx, storage
  refusing what it was asked to keep): record it where an operator sees it and never retry; ``reason`` is a
  short code a user is shown on the message's skip row when it belongs to an Enrollio thread.
- ``Malformed``: the queue message itself cannot be read: record it at once, retrying cannot mend it.

Use cases raise these where they know which it is (parsing a queue message raises ``Malformed``); ``classify``
maps what adapters raise onto them in one place. An error nobody anticipated counts as transient: it is retried
and, if it never mends, lands in the Failures table with its message, never dropped in silence.
"""

from __future__ import annotations

import json
import logging

from azure.core.exceptions import AzureError, HttpResponseError
from pydantic import ValidationError
from requests import RequestException

from sync_core.adapters.graph import GraphError, GraphUnavailable
from sync_core.adapters.ops_store import FailureStore
from sync_core.services import Services

log = logging.getLogger(__name__)

# What storage answers when it will never keep what it was asked to write (a value or an entity over its limits,
# a request body too large): only these are permanent. Other 400s (Md5Mismatch, InvalidHeaderValue, a bad
# authentication header, a wrong API version) are this service's or the moment's fault: retried, then recorded.
STORAGE_REFUSALS = frozenset({"PropertyValueTooLarge", "EntityTooLarge", "RequestBodyTooLarge"})


class Failure(Exception):
    """Base of the three kinds; ``str(failure)`` is what operators read."""

    kind = "failure"

    def describe(self) -> str:
        return f"{self.kind}: {self}"


class Transient(Failure):
    kind = "transient"

    def __init__(self, message: str, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Graph throttled the mailbox (a 429, or every slot of it stayed busy): the item did nothing wrong and is
        # only asked to wait, so waiting it out never counts as one of its tries.
        self.throttled = throttled


class Permanent(Failure):
    kind = "permanent"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Malformed(Failure):
    kind = "malformed"


def classify(exc: BaseException) -> Failure:
    """What kind of failure ``exc`` is, from the worker's point of view.

    Anything not anticipated (a bug, an odd SDK error) is transient on purpose: it is retried a bounded number of
    times and then recorded with its message, where recording it at once could hide a passing fault as lost mail.
    """
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, GraphUnavailable):
        message = f"Graph unavailable ({exc.status} {exc.code}): {exc.message}"
        return Transient(message, exc.retry_after, throttled=exc.status == 429)
    if isinstance(exc, GraphError):
        return Permanent("graph_error", f"{exc.status} {exc.code}: {exc.message}")
    if isinstance(exc, HttpResponseError) and (exc.status_code == 413 or storage_error_code(exc) in STORAGE_REFUSALS):
        # Storage refused what we asked to write for its size; it will refuse it again.
        return Permanent("unstorable", f"storage answered {exc.status_code} {storage_error_code(exc)}")
    if isinstance(exc, AzureError | RequestException | OSError):
        return Transient(f"{type(exc).__name__}: {exc}")
    return Transient(f"unexpected {type(exc).__name__}: {exc}")


def storage_error_code(exc: HttpResponseError) -> str:
    """Azure Storage's error code (``PropertyValueTooLarge``, ...): the SDK's field, the header, or the body."""
    headers = getattr(exc.response, "headers", None) or {}
    code = getattr(exc, "error_code", None) or headers.get("x-ms-error-code")
    if not code and exc.model is not None:
        odata = getattr(exc.model, "additional_properties", {}).get("odata.error", {})
        code = odata.get("code") if isinstance(odata, dict) else None
    return str(code or exc.reason or "")


def parse_json(raw: str, what: str) -> object:
    """A queue message's JSON, or ``Malformed`` naming what could not be read."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise Malformed(f"{what} is not JSON: {exc}") from None


def malformed(exc: ValidationError, what: str) -> Malformed:
    """A pydantic validation error of a queue message, naming each bad field."""
    fields = ", ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'} ({e['msg']})" for e in exc.errors())
    return Malformed(f"{what}: {fields}")


def recorded_line(queue: str, row: str, failure: Failure) -> str:
    """The log line operators are alerted on (infra/modules/alerts.bicep counts it by queue)."""
    return f"{queue}: recorded as failure {row}: {failure.describe()}"


def record(queue: str, body: str, failure: Failure, services: Services) -> str:
    """Record a message the service gives up on without retrying, and log the line operators are alerted on."""
    row = FailureStore(services.storage.tables).record(queue, body, services.clock.now(), error=failure.describe())
    log.error("%s", recorded_line(queue, row, failure))
    return row
