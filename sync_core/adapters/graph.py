"""A small Microsoft Graph client over ``requests``: the rules of CONTRACT.md sections 4 and 8, in one place.

- Every request carries ``Prefer: IdType="ImmutableId"``: the header applies per request, and ids must not change
  when Exchange moves a sent draft to Sent Items (CONTRACT section 4, "Immutable IDs").
- 429 / 503 / 504 and connection errors are retried: wait ``Retry-After`` seconds (fractional allowed) when given,
  else back off exponentially; a 503 is retried on a new connection (CONTRACT section 8). Retries stop when the
  next wait would overrun the caller's time budget: ``GraphUnavailable`` then says how long to wait.
- At most 4 requests in flight per mailbox from this process (Outlook's concurrency limit, CONTRACT section 8),
  a streamed body included: ``streamed`` holds the mailbox's slot until its body has been read.
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from sync_core import telemetry

IMMUTABLE_IDS = 'IdType="ImmutableId"'
# 500 and 502 are transient at Graph as often as 503/504; none of them is the caller's fault.
RETRYABLE = frozenset({429, 500, 502, 503, 504})
# After these, a request may or may not have been carried out (429 and 503 mean it was refused).
AMBIGUOUS = frozenset({500, 502, 504})
MAX_CONCURRENT_PER_MAILBOX = 4


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


_mailbox_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def mailbox_slot(mailbox: str) -> threading.BoundedSemaphore:
    """This process's in-flight limit for one mailbox, shared by every request to Graph or its upload URLs."""
    with _slots_lock:
        return _mailbox_slots.setdefault(mailbox, threading.BoundedSemaphore(MAX_CONCURRENT_PER_MAILBOX))


@dataclass
class RetryPolicy:
    budget_seconds: float = 20.0  # total time a call may spend waiting and retrying
    base_backoff: float = 0.5
    max_backoff: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = field(default=random.random)

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.base_backoff * 2**attempt) * (0.5 + self.jitter() / 2))


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.mailbox = mailbox
        self._session = session or requests.Session()
        self._retry = retry or RetryPolicy()
        self._timeout = timeout

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
        keep_slot: bool = False,
    ) -> requests.Response:
        """One Graph call with retries; returns the 2xx response or raises ``GraphError``/``GraphUnavailable``.

        ``repeatable=False`` is for calls that must not run twice (sending): a lost answer (timeout, dropped
        connection, 504) may hide a success, so it is raised as ``GraphUnavailable`` with ``ambiguous=True``
        instead of retried. A 429 or 503 means the request was refused, so those are still retried.
        ``keep_slot``: the mailbox's slot stays taken when a response is returned (``streamed`` gives it back).
        """
        url = self._url(path_or_url)
        started = self._retry.monotonic()
        attempt = 0
        refreshed = False
        while True:
            headers = {
                "Authorization": f"Bearer {self._token(force_refresh=refreshed)}",
                "Prefer": ", ".join((IMMUTABLE_IDS, *prefer)),
            }
            if content_type:
                headers["Content-Type"] = content_type
            if correlation := telemetry.client_request_id():
                headers["client-request-id"] = correlation  # the path's id, for Graph's side of the story
            slot, kept = mailbox_slot(self.mailbox), False
            slot.acquire()
            try:
                try:
                    response = self._session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=headers,
                        timeout=self._timeout,
                        stream=stream,
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    if not repeatable:
                        raise GraphUnavailable(0, "connectionError", str(exc), 5.0, ambiguous=True) from None
                    status, code, message, wait_hint = 0, "connectionError", str(exc), None
                else:
                    if response.status_code < 400:
                        kept = keep_slot
                        return response
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
                    if status in AMBIGUOUS and not repeatable:
                        raise GraphUnavailable(status, code, message, wait_hint or 5.0, ambiguous=True)
            finally:
                if not kept:
                    slot.release()
            if status == 503:
                self._session.close()  # "always make new retry requests over a new HTTP connection"
            wait = wait_hint if wait_hint is not None else self._retry.backoff(attempt)
            spent = self._retry.monotonic() - started
            if spent + wait > self._retry.budget_seconds:
                raise GraphUnavailable(status, code, message, retry_after=max(wait, 1.0))
            self._retry.sleep(wait)
            attempt += 1

    @contextlib.contextmanager
    def streamed(self, path_or_url: str) -> Iterator[requests.Response]:
        """A GET whose body is read inside the ``with`` block, which holds the mailbox's slot until it ends: the
        in-flight limit covers the transfer of a large body, not only its headers."""
        response = self.request("GET", path_or_url, stream=True, keep_slot=True)
        try:
            yield response
        finally:
            response.close()
            mailbox_slot(self.mailbox).release()

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
