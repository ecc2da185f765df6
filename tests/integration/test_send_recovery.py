"""A send whose answer from Graph is lost: never sent twice, never recorded as sent when it was not.

Graph's answer to ``POST …/send`` can be lost after Graph acted (a timeout, a 504). The service then asks Graph
whether the draft went out; when even that is unknown, the Idempotency-Key stays claimed until a later retry
(after the claim's lease) can find out.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sync_core.adapters import graph as graph_module
from sync_core.adapters.graph import GraphUnavailable
from sync_core.clock import FixedClock
from sync_core.send import send
from sync_core.send_outlook import SendOutcomeUnknown
from sync_core.services import Services
from tests.integration.conftest import Stack

CONTACT = "parent@home.example"


def body(user_id: str) -> bytes:
    return json.dumps(
        {
            "user_id": user_id,
            "account_id": "acct-1",
            "kind": "individual",
            "contact": {"email": CONTACT},
            "subject": "Lost answers",
            "html": "<p>hi</p>",
        }
    ).encode()


@contextmanager
def graph_faults(send_happens: bool, status_known: bool) -> Iterator[None]:
    """``POST …/send`` loses its answer (after sending, or without); optionally Graph cannot be asked either."""
    original = graph_module.GraphClient.request

    def request(self: graph_module.GraphClient, method: str, path: str, **kw: Any) -> Any:
        if method == "POST" and path.endswith("/send"):
            if send_happens:
                original(self, method, path, **kw)
            raise GraphUnavailable(504, "UnknownError", "gateway timeout", 5.0, ambiguous=True)
        if method == "GET" and "isDraft" in str(kw.get("params")) and not status_known:
            raise GraphUnavailable(503, "serviceNotAvailable", "busy", 5.0)
        return original(self, method, path, **kw)

    graph_module.GraphClient.request = request  # type: ignore[method-assign]
    try:
        yield
    finally:
        graph_module.GraphClient.request = original  # type: ignore[method-assign]


def sent_items(stack: Stack, address: str) -> list[dict[str, Any]]:
    return list(stack.mail_world("GET", f"mail/{address}/messages?folder=sentitems")["value"])


def later(stack: Stack) -> Services:
    """The service as a retry sees it, after the claim's lease has run out."""
    return Services(stack.settings, FixedClock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=7)))


def test_a_send_whose_answer_was_lost_is_confirmed_with_graph_and_not_sent_again(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("lost.answer")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    with graph_faults(send_happens=True, status_known=True):
        first = send(key, body(user_id), stack.services)
    assert first.body["route"] == "outlook"
    again = send(key, body(user_id), stack.services)
    assert again.body == first.body
    [copy] = sent_items(stack, address)
    assert copy["id"] == first.body["message_id"]
    thread = stack.enrollio.call("GET", f"/api/threads/{first.body['thread_id']}/messages", params={"user_id": user_id})
    assert len(thread.json()["messages"]) == 1


def test_an_unknown_outcome_keeps_the_key_until_a_later_retry_finds_it_was_sent(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("unknown.sent")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    with graph_faults(send_happens=True, status_known=False), pytest.raises(SendOutcomeUnknown):
        send(key, body(user_id), stack.services)
    resolved = send(key, body(user_id), later(stack))
    assert resolved.body["route"] == "outlook"
    assert len(sent_items(stack, address)) == 1
    assert send(key, body(user_id), stack.services).body == resolved.body  # completed: replayed from now on


def test_an_unknown_outcome_that_was_not_sent_is_cleaned_up_and_sent_once(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("unknown.unsent")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    with graph_faults(send_happens=False, status_known=False), pytest.raises(SendOutcomeUnknown):
        send(key, body(user_id), stack.services)
    assert sent_items(stack, address) == []
    resolved = send(key, body(user_id), later(stack))
    [copy] = sent_items(stack, address)
    assert copy["id"] == resolved.body["message_id"]
    thread = stack.enrollio.call(
        "GET", f"/api/threads/{resolved.body['thread_id']}/messages", params={"user_id": user_id}
    )
    assert len(thread.json()["messages"]) == 1


def test_a_storage_error_after_graph_accepted_the_send_neither_undoes_nor_resends(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import ServiceRequestError

    from sync_core.adapters.thread_store import ThreadStore

    def storage_blip(self: Any, thread_id: str, graph_id: str) -> None:
        raise ServiceRequestError("table storage unavailable")

    address = stack.new_mailbox("after.send")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    monkeypatch.setattr(ThreadStore, "set_latest", storage_blip)
    answer = send(key, body(user_id), stack.services)
    monkeypatch.undo()
    assert answer.body["route"] == "outlook"
    assert send(key, body(user_id), stack.services).body == answer.body
    [copy] = sent_items(stack, address)
    assert copy["id"] == answer.body["message_id"]


def test_an_ambiguous_send_that_still_reads_as_a_draft_is_not_taken_as_unsent(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("still.draft")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    # Graph sends asynchronously: right after a lost answer, the message may still read as a draft.
    with graph_faults(send_happens=False, status_known=True), pytest.raises(SendOutcomeUnknown):
        send(key, body(user_id), stack.services)
    resolved = send(key, body(user_id), later(stack))
    assert len(sent_items(stack, address)) == 1
    assert resolved.body["route"] == "outlook"


def test_concurrent_retries_of_an_orphaned_claim_send_once(stack: Stack, user_id: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    address = stack.new_mailbox("orphan.race")
    stack.connect(user_id, address)
    key = uuid.uuid4().hex
    with graph_faults(send_happens=False, status_known=False), pytest.raises(SendOutcomeUnknown):
        send(key, body(user_id), stack.services)

    def retry(_: int) -> str:
        try:
            return str(send(key, body(user_id), later(stack)).body["message_id"])
        except Exception as exc:  # the losers are told to retry later
            return type(exc).__name__

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(retry, range(4)))
    assert len(sent_items(stack, address)) == 1
    assert [o for o in outcomes if o not in ("Conflict", "SendOutcomeUnknown")]  # someone got the answer
