"""``POST /api/send``: exactly once per (user, Idempotency-Key).

A conditional insert of the key is the lock. The answer is written into the claim before Graph is asked to
send; ``/send`` is never retried blindly, and if its answer is lost the claim stays with the prepared answer,
so a retry after the claim's lease asks Graph what happened instead of sending again.

The lease is only safe if no call outlives it. A send with large attachments can run for minutes, so the call
keeps its own deadline (``SEND_DEADLINE`` after its claim): past it, no new step starts (no range, no send) and
the call undoes its draft and answers 503. Every write to the claim is conditional on the claim's etag, and right
before Graph is asked to send, the call reads its claim back: a call that was taken over anyway sends nothing and
releases nothing of the retry's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sync_core import events
from sync_core.adapters.graph import GraphError, TokenUnavailable
from sync_core.adapters.idempotency_store import Claim, ClaimLost, IdempotencyStore, Recorded, row_key
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.clock import Clock
from sync_core.results import BadRequest, Json, Problem
from sync_core.send_outlook import SendOutcomeUnknown, SendOutOfTime, send_once, was_sent
from sync_core.send_request import SendRequest, parse_request
from sync_core.services import Services
from sync_core.signing import IDEMPOTENCY_HEADER

log = logging.getLogger(__name__)

WAIT_FOR_FIRST_CALL = 10.0  # seconds a concurrent duplicate waits for the first call's answer
# Longer than any send call can run (host.json functionTimeout is 5 minutes): an older pending claim is orphaned.
CLAIM_LEASE = dt.timedelta(minutes=6)
# No step of a send (an attachment, an upload range, the send itself) starts later than this after its claim: the
# last one ends within its own timeouts (a range PUT 60 s a try, Graph's retry budget) well before the lease does,
# and before the host's 5-minute function timeout.
SEND_DEADLINE = dt.timedelta(minutes=4)


class Conflict(Problem):
    status = 409


def send(idempotency_key: str | None, body: bytes, services: Services) -> Json:
    """Send at most once per (user, Idempotency-Key); a retry gets the first answer."""
    if not idempotency_key or len(idempotency_key) > 255:
        raise BadRequest(
            f"the {IDEMPOTENCY_HEADER} header is required (1 to 255 characters)", fields=[{"field": IDEMPOTENCY_HEADER}]
        )
    request = parse_request(body)
    body_hash = hashlib.sha256(body).hexdigest()
    keys = IdempotencyStore(services.storage.tables)
    user, key = request.user_id, idempotency_key
    claimed = keys.claim(user, key, body_hash, services.clock.now())
    if isinstance(claimed, Recorded):
        return _replay(keys, request, key, body, claimed, services)

    return _run_claimed(keys, request, claimed, services)


@dataclass
class _Hold:
    """A send's hold on its key (``send_outlook.Hold``): the prepared answer, the deadline, the claim read back."""

    keys: IdempotencyStore
    claim: Claim
    clock: Clock
    connection_id: str = ""  # the mailbox it goes out from, once routed

    def prepare(self, answer: dict[str, Any], draft_path: str, connection_id: str) -> None:
        self.connection_id = connection_id
        try:
            self.keys.prepare(self.claim, answer, draft_path, connection_id)
        except ClaimLost:
            raise _taken_over() from None

    def keep(self) -> None:
        if self.clock.now() - self.claim.claimed_at > SEND_DEADLINE:
            raise SendOutOfTime(
                f"this send ran longer than {int(SEND_DEADLINE.total_seconds())} s, too close to the end of its "
                f"{IDEMPOTENCY_HEADER}'s lease to go on safely; nothing was sent: retry with the same key"
            )

    def confirm(self) -> None:
        self.keep()
        if not self.keys.holds(self.claim):
            raise _taken_over()


def _taken_over() -> SendOutOfTime:
    return SendOutOfTime(
        f"a later call with this {IDEMPOTENCY_HEADER} took the send over (this one outlived its lease); this call "
        "sent nothing: retry with the same key for the answer"
    )


def _run_claimed(keys: IdempotencyStore, request: SendRequest, claim: Claim, services: Services) -> Json:
    """Send for the caller that holds the key's claim, and settle the claim."""
    hold = _Hold(keys, claim, services.clock)
    try:
        answer = send_once(request, services, hold)
    except SendOutcomeUnknown:
        raise  # the claim stays, with the prepared answer: a retry finds out what happened
    except BaseException as exc:
        # Only if still this call's: never a retry's claim (which would let a third call send again).
        if not keys.release(claim) and isinstance(exc, Exception):
            raise _taken_over() from exc
        raise
    # If this write fails, the claim still holds the prepared answer, and a retry resolves it (_resolve).
    try:
        with events.recorded(services, _sent(request, claim, hold.connection_id, answer, services)):
            keys.complete(claim, answer.status, answer.body)
    except ClaimLost:  # taken over after the send: the retry finds the message sent (was_sent) and completes it
        log.warning("send for user %s: its claim was taken over after the send", request.user_id)
    return answer


def _sent(
    request: SendRequest, claim: Claim, connection_id: str, answer: Json, services: Services
) -> events.Event | None:
    """``message.sent`` for a send through Outlook (an account-provider answer sent nothing here)."""
    if answer.status != 200 or not isinstance(answer.body, dict) or answer.body.get("route") != "outlook":
        return None
    return events.message_sent(
        request.user_id,
        request.account_id,
        connection_id,
        answer.body,
        row_key(claim.key),
        claim.key,
        services.clock.now(),
    )


def _replay(
    keys: IdempotencyStore, request: SendRequest, key: str, body: bytes, recorded: Recorded, services: Services
) -> Json:
    if recorded.body_hash != hashlib.sha256(body).hexdigest():
        raise Conflict(
            f"this {IDEMPOTENCY_HEADER} was used with a different body", fields=[{"field": IDEMPOTENCY_HEADER}]
        )
    deadline = time.monotonic() + WAIT_FOR_FIRST_CALL
    while not recorded.done and time.monotonic() < deadline:
        if recorded.created_at and services.clock.now() - recorded.created_at > CLAIM_LEASE:
            return _resolve(keys, request, key, body, recorded, services)
        time.sleep(0.1)
        recorded = keys.get(request.user_id, key) or recorded
    if not recorded.done:
        raise Conflict(
            f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later",
            fields=[{"field": IDEMPOTENCY_HEADER}],
        )
    return Json(recorded.status, recorded.answer, headers={"Idempotent-Replayed": "true"})


def _resolve(
    keys: IdempotencyStore, request: SendRequest, key: str, body: bytes, recorded: Recorded, services: Services
) -> Json:
    """A claim older than any call can run: its call died or lost Graph's answer. One retry takes it over
    (a conditional update: concurrent retries cannot both), finds out what happened, and finishes it."""
    user = request.user_id
    claim = keys.take_over(user, key, recorded, services.clock.now())
    if claim is None:
        raise Conflict(
            f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later",
            fields=[{"field": IDEMPOTENCY_HEADER}],
        )
    connection = services.connections.get(user, recorded.connection_id) if recorded.connection_id else None
    outcome: bool | None = False
    if recorded.prepared and connection is not None:
        outcome = was_sent(services.graph_for(connection), recorded.draft_path)
    if outcome is None:
        raise SendOutcomeUnknown("Graph cannot say yet whether the earlier call sent the message; retry later")
    if outcome:
        answer = Json(200, recorded.prepared, headers={"Idempotent-Replayed": "true"})
        sent = _sent(request, claim, recorded.connection_id, answer, services)
        # ClaimLost: yet another retry took it over; it will find the same outcome.
        with contextlib.suppress(ClaimLost), events.recorded(services, sent):
            keys.complete(claim, 200, recorded.prepared)
        return answer
    if recorded.prepared:  # not sent: forget what the dead call recorded, then send afresh
        prepared = recorded.prepared
        if connection is not None:
            with contextlib.suppress(GraphError, TokenUnavailable):
                services.graph_for(connection).request("DELETE", recorded.draft_path)
        MessageStore(services.storage.tables, services.storage.blobs).delete(
            prepared["thread_id"], prepared["internet_message_id"]
        )
        if prepared["thread_id"] != request.thread_id:
            ThreadStore(services.storage.tables).delete(prepared["thread_id"])
    return _run_claimed(keys, request, claim, services)
