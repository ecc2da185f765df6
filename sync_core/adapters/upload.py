"""PUTs to an attachment upload session's pre-authenticated URL (CONTRACT.md section 5), never with a bearer token.

The ``uploadUrl`` carries its own token and lives outside Graph (``outlook.office.com``): ``GraphClient`` refuses
it, and this client sends no ``Authorization`` header ("Do not specify an Authorization request header").
Ranges go in order, each with ``Content-Range: bytes {start}-{end}/{total}``; an intermediate answer is 200 with
``nextExpectedRanges: ["{next}"]``, the last 201. Retries, within the caller's time budget:
- 429 and 503 refused the range: wait ``Retry-After`` (fractional seconds) or back off, then PUT it again;
- a lost answer (connection error, timeout, 500/502/504) may hide a stored range: PUT the same range again. That
  is safe: a range already taken is refused as out of order (416), never stored twice; the last range taken
  finishes the session, whose URL then answers 404. Either refusal right after a lost answer says the range may
  have been stored, not that the upload is broken for good: it ends the upload as transient (a
  ``GraphUnavailable``), so the caller deletes the draft and a retry sends afresh. (Resuming would need the
  session's state; Outlook's upload sessions document no way to ask for it, CONTRACT.md section 5.)
- anything else (a refused range, an expired session: 401, a gone session: 404) ends the upload at once.
A failed upload raises ``UploadInterrupted`` with the byte it stopped at and Graph's error (a ``GraphUnavailable``
when trying again later may work). Redirects are not followed: the range's bytes have been read once. Requests
count against the mailbox's in-flight limit like Graph's, through the same gate (``mailbox_gate``), and share its
throttle: a 429 here holds back the mailbox's other requests too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import requests

from sync_core.adapters.graph import (
    AMBIGUOUS,
    BUSY_RETRY_AFTER,
    PROCESS_GATE,
    GraphError,
    GraphUnavailable,
    RetryPolicy,
    error_of,
)
from sync_core.adapters.graph import parse_retry_after as retry_after_of
from sync_core.adapters.mailbox_gate import Held, MailboxGate, SlotTimeout

# What a range PUT again after a lost answer meets when the lost attempt was stored: out of order, or (the last
# range) a finished session.
STORED_ALREADY = frozenset({404, 416})


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def __len__(self) -> int: ...


# Opens a fresh reader of the file's bytes [start, end): each attempt of a range reads it again.
OpenRange = Callable[[int, int], Readable]


class UploadInterrupted(Exception):
    """The upload stopped at byte ``offset``; ``cause`` is Graph's answer (``GraphUnavailable`` if transient)."""

    def __init__(self, offset: int, cause: GraphError) -> None:
        super().__init__(f"upload stopped at byte {offset}: {cause}")
        self.offset = offset
        self.cause = cause


class UploadClient:
    def __init__(
        self,
        session: requests.Session,
        *,
        mailbox: str,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        gate: MailboxGate | None = None,
    ) -> None:
        self._session = session
        self.mailbox = mailbox
        self._gate = gate or PROCESS_GATE
        self._retry = retry or RetryPolicy()
        self._timeout = timeout

    def upload(
        self,
        url: str,
        size: int,
        open_range: OpenRange,
        range_bytes: int,
        before_range: Callable[[], object] | None = None,
    ) -> None:
        """Send bytes ``[0, size)`` to ``url`` in ranges of at most ``range_bytes``, in order; ``before_range`` may
        stop the upload (by raising) before each range, e.g. when the caller's time is up."""
        if not url.startswith("https://"):
            raise UploadInterrupted(0, GraphError(0, "insecureUploadUrl", "the upload URL is not https"))
        start = 0
        while start < size:
            if before_range is not None:
                before_range()
            start = self.put_range(url, start, min(start + range_bytes, size), size, open_range)

    def put_range(self, url: str, start: int, end: int, total: int, open_range: OpenRange) -> int:
        """PUT bytes ``[start, end)``; the next byte Graph expects (``total`` when the upload is complete)."""
        began = self._retry.monotonic()
        attempt = 0
        answer_lost = False  # an earlier attempt at this range may have been stored
        while True:
            headers = {
                "Content-Range": f"bytes {start}-{end - 1}/{total}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(end - start),
            }
            held = self._enter(start, began)
            try:
                try:
                    response = self._session.put(
                        url, data=open_range(start, end), headers=headers, timeout=self._timeout, allow_redirects=False
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    status, code, message, wait_hint = 0, "connectionError", str(exc), None
                else:
                    if response.status_code in (200, 201):
                        return self._next(response, end, total)
                    code, message = error_of(response)
                    status, wait_hint = response.status_code, retry_after_of(response.headers.get("Retry-After"))
                    response.close()
                    if answer_lost and status in STORED_ALREADY:
                        lost = f"{message} (right after an answer that was lost: the range may have been stored)"
                        raise UploadInterrupted(start, GraphUnavailable(status, code, lost, 1.0, ambiguous=True))
                    if status not in {429, 503} | AMBIGUOUS:
                        raise UploadInterrupted(start, GraphError(status, code, message))
            finally:
                self._gate.leave(held)
            answer_lost = answer_lost or status == 0 or status in AMBIGUOUS
            if status == 503:
                self._session.close()  # a new connection for the retry (CONTRACT.md section 8)
            wait = wait_hint if wait_hint is not None else self._retry.backoff(attempt)
            if status == 429:  # the mailbox's other requests wait it out too
                self._gate.throttle(self.mailbox, self._retry.wall() + wait)
            if self._retry.monotonic() - began + wait > self._retry.budget_seconds:
                cause = GraphUnavailable(status, code, message, retry_after=max(wait, 1.0))
                raise UploadInterrupted(start, cause)
            self._retry.sleep(wait)
            attempt += 1

    def _enter(self, start: int, began: float) -> Held:
        """A slot of the mailbox, after its throttle has passed, within what is left of the budget."""
        wait = self._gate.throttled_until(self.mailbox) - self._retry.wall()
        left = self._retry.budget_seconds - (self._retry.monotonic() - began)
        if wait > left:
            raise UploadInterrupted(start, GraphUnavailable(429, "mailboxThrottled", "throttled", max(wait, 1.0)))
        if wait > 0:
            self._retry.sleep(wait)
            left -= wait
        try:
            return self._gate.enter(self.mailbox, max(left, 0.0))
        except SlotTimeout as exc:
            raise UploadInterrupted(start, GraphUnavailable(429, "mailboxBusy", str(exc), BUSY_RETRY_AFTER)) from None

    @staticmethod
    def _next(response: requests.Response, end: int, total: int) -> int:
        if response.status_code == 201:
            if end != total:
                raise UploadInterrupted(
                    end, GraphError(201, "unexpectedComplete", f"complete at byte {end} of {total}")
                )
            return total
        try:
            expected = str(response.json()["nextExpectedRanges"][0])
            following = int(expected.split("-", 1)[0])
        except (ValueError, KeyError, IndexError, TypeError):
            raise UploadInterrupted(end, GraphError(200, "unreadableAnswer", response.text[:200])) from None
        if following != end:  # Outlook sessions take bytes in order: anything else is a broken session
            raise UploadInterrupted(
                end, GraphError(200, "unexpectedRange", f"Graph expects byte {following} next, not {end}")
            )
        return following

    def cancel(self, url: str) -> None:
        """Delete the session (best effort: an abandoned session only expires)."""
        with contextlib.suppress(requests.RequestException):
            self._session.delete(url, timeout=self._timeout, allow_redirects=False).close()
