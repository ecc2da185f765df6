"""``POST /api/send``: exactly once per (user, Idempotency-Key).

A conditional insert of the key is the lock. The answer is written into the claim before Graph is asked to
send; ``/send`` is never retried blindly, and if its answer is lost the claim stays with the prepared answer,
so a retry after the claim's lease (longer than any call) asks Graph what happened instead of sending again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from typing import Any

from sync_core.adapters.graph import GraphError, TokenUnavailable
from sync_core.adapters.idempotency_store import IdempotencyStore, Recorded
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.results import BadRequest, Json, Problem
from sync_core.send_outlook import SendOutcomeUnknown, send_once, was_sent
from sync_core.send_request import SendRequest, parse_request
from sync_core.services import Services
from sync_core.signing import IDEMPOTENCY_HEADER

WAIT_FOR_FIRST_CALL = 10.0  # seconds a concurrent duplicate waits for the first call's answer
# Longer than any send call can run (host.json functionTimeout is 5 minutes): an older pending claim is orphaned.
CLAIM_LEASE = dt.timedelta(minutes=6)


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
    recorded = keys.claim(user, key, body_hash, services.clock.now())
    if recorded is not None:
        return _replay(keys, request, key, body, recorded, services)

    return _run_claimed(keys, request, key, services)


def _run_claimed(keys: IdempotencyStore, request: SendRequest, key: str, services: Services) -> Json:
    """Send for the caller that holds the key's claim, and settle the claim."""
    user = request.user_id

    def prepare(answer: dict[str, Any], draft_path: str, connection_id: str) -> None:
        keys.prepare(user, key, answer, draft_path, connection_id)

    try:
        answer = send_once(request, services, prepare)
    except SendOutcomeUnknown:
        raise  # the claim stays, with the prepared answer: a retry finds out what happened
    except BaseException:
        keys.release(user, key)
        raise
    # If this write fails, the claim still holds the prepared answer, and a retry resolves it (_resolve).
    keys.complete(user, key, answer.status, answer.body)
    return answer


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
    if not keys.take_over(user, key, recorded, services.clock.now()):
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
        keys.complete(user, key, 200, recorded.prepared)
        return Json(200, recorded.prepared, headers={"Idempotent-Replayed": "true"})
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
    return _run_claimed(keys, request, key, services)
