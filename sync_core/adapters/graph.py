"""A small Microsoft Graph client over ``requests``: the rules of CONTRACT.md sections 4 and 8, in one place.

- Every request carries ``Prefer: IdType="ImmutableId"``: the header applies per request, and ids must not change
  when Exchange moves a sent draft to Sent Items (CONTRACT section 4, "Immutable IDs").
- 429 / 503 / 504 and connection errors are retried: wait ``Retry-After`` seconds (fractional allowed) when given,
  else back off exponentially; a 503 is retried on a new connection (CONTRACT section 8). Retries stop when the
  next wait would overrun the caller's time budget: ``GraphUnavailable`` then says how long to wait.
- At most 4 requests in flight per mailbox (Outlook's concurrency limit, CONTRACT section 8), a streamed body
  included (``streamed`` holds the mailbox's slot until its body has been read), and after a 429 nothing is sent to
  the mailbox before its ``Retry-After`` has passed: both kept by a ``MailboxGate`` (``mailbox_gate``), across
  instances when the gate keeps its slots in storage (``Services``), else within this process. Waiting for a slot
  or for a throttle counts against the time budget; past it, ``GraphUnavailable`` (429) says how long to wait.
- A 401 forces one token refresh and one retry: a token revoked at the server still looks valid to MSAL's
  cache, and the refresh is what reveals a lost grant (``TokenUnavailable``).
- Other errors raise ``GraphError`` with Graph's ``error.code``.
- Each request carries the path's correlation id as ``client-request-id`` (``sync_core.telemetry``).
- ``@odata.nextLink`` / ``deltaLink`` URLs are followed as given, but only on the configured Graph host: a
  bearer token is never sent anywhere else (an upload session's pre-authenticated URL is ``upload.py``'s).
"""

from __future__ import annotations

import base64
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from sync_core import telemetry
from sync_core.adapters.mailbox_gate import Held, MailboxGate, ProcessSlots, SlotTimeout

IMMUTABLE_IDS = 'IdType="ImmutableId"'
# 500 and 502 are transient at Graph as often as 503/504; none of them is the caller's fault.
RETRYABLE = frozenset({429, 500, 502, 503, 504})
# After these, a request may or may not have been carried out (429 and 503 mean it was refused).
AMBIGUOUS = frozenset({500, 502, 504})
BUSY_RETRY_AFTER = 2.0  # every slot of the mailbox stayed taken for the whole budget: ask again a little later
# Every request waiting out a mailbox's throttle, in every instance, would otherwise go at the same instant and draw
# the next 429 together: each waits a random part of this much longer (a tenth of the wait, at most a second).
THROTTLE_SPREAD = (0.1, 1.0)


class GraphError(Exception):
    """Graph answered with an error it will keep answering (4xx other than 429, or an unexpected shape)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class GraphUnavailable(GraphError):
    """Throttled or unavailable past the time budget: transient, try again after ``retry_after`` seconds."""

    def __init__(self, status: int, code: str, message: str, retry_after: float, ambiguous: bool = False) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # the request may have been carried out: its answer was lost


class TokenUnavailable(Exception):
    """No usable token for the mailbox (grant revoked or expired): the connection needs reconnecting."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; Graph sends fractional seconds (e.g. ``2.128``)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date form: Graph documents seconds, so fall back to back-off
    return max(seconds, 0.0)


def error_of(response: requests.Response) -> tuple[str, str]:
    """Graph's ``error.code`` and ``error.message`` from an error response, whatever its body."""
    try:
        err = response.json().get("error", {})
        return str(err.get("code") or response.reason), str(err.get("message") or "")
    except (ValueError, AttributeError):
        return str(response.reason or response.status_code), response.text[:200]


# Without storage (tests, tools): one gate for the whole process, shared by every client of a mailbox.
PROCESS_GATE = MailboxGate(ProcessSlots())


@dataclass
class RetryPolicy:
    budget_seconds: float = 20.0  # total time a call may spend waiting and retrying
    base_backoff: float = 0.5
    max_backoff: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = field(default=random.random)
    wall: Callable[[], float] = time.time  # Unix seconds: a throttle deadline is shared between instances

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.base_backoff * 2**attempt) * (0.5 + self.jitter() / 2))


@dataclass(frozen=True)
class _Call:
    """What one Graph call sends, tried again as it is."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    json: Any = None
    data: bytes | None = None
    content_type: str | None = None
    prefer: tuple[str, ...] = ()
    stream: bool = False
    repeatable: bool = True


class TokenSource(Protocol):
    def __call__(self, force_refresh: bool = False) -> str:
        """A bearer token; ``force_refresh`` skips any cached access token. May raise ``TokenUnavailable``."""
        ...


class StaticToken:
    """A token known up front (just redeemed from an auth code): nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, force_refresh: bool = False) -> str:
        return self._token


class GraphClient:
    """Graph calls for one mailbox, authenticated by ``token()`` (which may raise ``TokenUnavailable``)."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        mailbox: str,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 15.0,
        gate: MailboxGate | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.mailbox = mailbox
        self._session = session or requests.Session()
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self.gate = gate or PROCESS_GATE

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("https://", "http://")):
            if not path_or_url.startswith(self.base_url + "/"):
                raise GraphError(0, "foreignUrl", f"refusing to send a token to {path_or_url.split('?')[0]}")
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        prefer: tuple[str, ...] = (),
        stream: bool = False,
        repeatable: bool = True,
    ) -> requests.Response:
        """One Graph call with retries; returns the 2xx response or raises ``GraphError``/``GraphUnavailable``.

        ``repeatable=False`` is for calls that must not run twice (sending): a lost answer (timeout, dropped
        connection, 504) may hide a success, so it is raised as ``GraphUnavailable`` with ``ambiguous=True``
        instead of retried. A 429 or 503 means the request was refused, so those are still retried.
        """
        call = _Call(method, self._url(path_or_url), params, json, data, content_type, prefer, stream, repeatable)
        return self._send(call, keep_slot=False)[0]

    def _send(self, call: _Call, keep_slot: bool) -> tuple[requests.Response, Held | None]:
        """``request``; with ``keep_slot`` the mailbox's slot stays held when a response is returned (with it)."""
        started = self._retry.monotonic()
        attempt = 0
        refreshed = False
        while True:
            self._wait_out_throttle(started)
            headers = {
                "Authorization": f"Bearer {self._token(force_refresh=refreshed)}",
                "Prefer": ", ".join((IMMUTABLE_IDS, *call.prefer)),
            }
            if call.content_type:
                headers["Content-Type"] = call.content_type
            if correlation := telemetry.client_request_id():
                headers["client-request-id"] = correlation  # the path's id, for Graph's side of the story
            held, kept = self._enter(started), False
            try:
                try:
                    response = self._session.request(
                        call.method,
                        call.url,
                        params=call.params,
                        json=call.json,
                        data=call.data,
                        headers=headers,
                        timeout=self._timeout,
                        stream=call.stream,
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    if not call.repeatable:
                        raise GraphUnavailable(0, "connectionError", str(exc), 5.0, ambiguous=True) from None
                    status, code, message, wait_hint = 0, "connectionError", str(exc), None
                else:
                    if response.status_code < 400:
                        kept = keep_slot
                        return response, held if kept else None
                    code, message = error_of(response)
                    if response.status_code == 401 and not refreshed:
                        refreshed = True
                        continue
                    if response.status_code not in RETRYABLE:
                        raise GraphError(response.status_code, code, message)
                    status, wait_hint = response.status_code, parse_retry_after(response.headers.get("Retry-After"))
                    if status == 429:
                        telemetry.graph_throttled.add(1)
                    response.close()
                    if status in AMBIGUOUS and not call.repeatable:
                        raise GraphUnavailable(status, code, message, wait_hint or 5.0, ambiguous=True)
            finally:
                if not kept:
                    self.gate.leave(held)
            if status == 503:
                self._session.close()  # "always make new retry requests over a new HTTP connection"
            wait = wait_hint if wait_hint is not None else self._retry.backoff(attempt)
            if status == 429:  # every request to this mailbox waits it out, in every instance (section 8)
                self.gate.throttle(self.mailbox, self._retry.wall() + wait)
            spent = self._retry.monotonic() - started
            if spent + wait > self._retry.budget_seconds:
                raise GraphUnavailable(status, code, message, retry_after=max(wait, 1.0))
            if status != 429:
                self._retry.sleep(wait)  # a 429's wait is the mailbox's throttle, waited out before the next try
            attempt += 1

    def _wait_out_throttle(self, started: float) -> None:
        """Wait until the mailbox's throttle (a 429 here or at another instance) has passed, within the budget."""
        wait = self.gate.throttled_until(self.mailbox) - self._retry.wall()
        if wait <= 0:
            return
        if self._retry.monotonic() - started + wait > self._retry.budget_seconds:
            raise GraphUnavailable(429, "mailboxThrottled", "Graph throttles this mailbox", retry_after=max(wait, 1.0))
        fraction, most = THROTTLE_SPREAD
        self._retry.sleep(wait + min(most, wait * fraction) * self._retry.jitter())

    def _enter(self, started: float) -> Held:
        """One of the mailbox's slots, waiting for it within what is left of the budget."""
        left = self._retry.budget_seconds - (self._retry.monotonic() - started)
        try:
            return self.gate.enter(self.mailbox, max(left, 0.0))
        except SlotTimeout as exc:
            raise GraphUnavailable(429, "mailboxBusy", str(exc), retry_after=BUSY_RETRY_AFTER) from None

    @contextlib.contextmanager
    def streamed(self, path_or_url: str) -> Iterator[requests.Response]:
        """A GET whose body is read inside the ``with`` block, which holds the mailbox's slot until it ends: the
        in-flight limit covers the transfer of a large body, not only its headers."""
        call = _Call("GET", self._url(path_or_url), stream=True)
        response, held = self._send(call, keep_slot=True)
        try:
            yield response
        finally:
            response.close()
            if held is not None:
                self.gate.leave(held)

    def get_json(self, path_or_url: str, params: Mapping[str, str] | None = None, prefer: tuple[str, ...] = ()) -> Any:
        return self.request("GET", path_or_url, params=params, prefer=prefer).json()

    def post_json(self, path: str, body: Any, repeatable: bool = True) -> Any:
        response = self.request("POST", path, json=body, repeatable=repeatable)
        return response.json() if response.content else None

    def post_mime(self, path: str, mime: bytes) -> Any:
        """Create an item from MIME: the message base64-encoded, as ``text/plain`` (CONTRACT.md section 6)."""
        response = self.request("POST", path, data=base64.b64encode(mime), content_type="text/plain", repeatable=False)
        return response.json()

    def pages(self, path: str, params: Mapping[str, str] | None = None, prefer: tuple[str, ...] = ()) -> Iterator[Any]:
        """Each page of a collection or delta round, following ``@odata.nextLink`` as-is (never hand-edited)."""
        page = self.get_json(path, params, prefer)
        yield page
        while next_link := page.get("@odata.nextLink"):
            page = self.get_json(next_link, prefer=prefer)
            yield page
