"""Sending what users attach (issue 13): files of 3 MB and more through upload sessions, the tenant's message size
limit as a clear 413, a range refused part-way (retried, or cleaned up with nothing half-sent), exactly once per
Idempotency-Key across an upload session, and inline images with their contentIds both ways.

The module's stack sets ``MAX_MESSAGE_BYTES`` to 14 MiB (35 MB by default) so that "over the limit" costs an
11 MiB file (15 MiB as Exchange counts it, encoded), not a 26 MB one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from devtools.azurite import Azurite
from devtools.stack import offline_stack
from sync_core.adapters.idempotency_store import IdempotencyStore
from sync_core.clock import FixedClock
from sync_core.results import Json, Problem
from sync_core.send import send
from sync_core.send_request import MAX_ATTACHMENTS
from sync_core.services import Services
from tests.integration.conftest import Stack, wait_until

MiB = 1024 * 1024
LIMIT = 14 * MiB  # a 10 MB file is 13.7 MB encoded: within it
CONTACT = "parent@home.example"
UPLOAD_ROUTE = "PUT /api/v2.0/Users/{id}/Messages/{id}/AttachmentSessions/{id}"


@pytest.fixture(scope="module")
def stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with offline_stack(
        azurite, tmp_path_factory.mktemp("stack"), GRAPH_RETRY_BUDGET_SECONDS="3", MAX_MESSAGE_BYTES=str(LIMIT)
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _faults_off(stack: Stack) -> Iterator[None]:
    yield
    stack.emulator.faults.reset()
    stack.mail_world("POST", "mail/limits", {"max_message_bytes": 35 * MiB})


def file_bytes(size: int, seed: str = "term-schedule") -> bytes:
    return hashlib.shake_256(seed.encode()).digest(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def email(user_id: str, *files: tuple[str, bytes], **overrides: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": CONTACT, "name": "Pat Parent"},
        "subject": "Term schedule",
        "html": "<p>The schedule is attached.</p>",
        "attachments": [
            {"name": name, "content_type": "application/pdf", "content_base64": base64.b64encode(data).decode()}
            for name, data in files
        ],
        **overrides,
    }


def post_send(stack: Stack, body: dict[str, Any], key: str | None = None) -> requests.Response:
    return stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def folder(stack: Stack, address: str, name: str) -> list[dict[str, Any]]:
    return list(stack.mail_world("GET", f"mail/{address}/messages?folder={name}")["value"])


def outbound(stack: Stack, address: str) -> list[dict[str, Any]]:
    return list(stack.mail_world("GET", f"mail/outbound?mailbox={address}")["value"])


def thread(stack: Stack, user_id: str, thread_id: str) -> dict[str, Any]:
    return dict(stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id}).json())


def skips(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    return list(stack.enrollio.call("GET", f"/api/users/{user_id}/skips").json()["skips"])


def connected(stack: Stack, user_id: str, name: str) -> str:
    address = stack.new_mailbox(name)
    stack.connect(user_id, address)
    return address


def mailbox_routes(stack: Stack, address: str) -> dict[str, int]:
    found = stack.world.mailbox(address)
    assert found is not None
    return stack.emulator.log.counts().get(found.id, {})


# -- large attachments --------------------------------------------------------------------------------------------


def test_a_10_mb_attachment_goes_through_an_upload_session_and_arrives_byte_identical(
    stack: Stack, user_id: str
) -> None:
    address = connected(stack, user_id, "upload.10mb")
    data = file_bytes(10 * 1000 * 1000)
    stack.emulator.log.clear()
    response = post_send(stack, email(user_id, ("term-schedule.pdf", data)))
    assert response.status_code == 200, response.text
    answer = response.json()
    routes = mailbox_routes(stack, address)
    assert routes["POST /users/{id}/messages/{id}/attachments/createUploadSession"] == 1
    assert routes[UPLOAD_ROUTE] == 3  # 10 MB in ranges of at most 4 MiB
    [delivery] = outbound(stack, address)
    assert [(a["name"], a["size"], a["sha256"]) for a in delivery["attachments"]] == [
        ("term-schedule.pdf", len(data), sha(data))
    ]
    [copy] = folder(stack, address, "sentitems")
    assert copy["id"] == answer["message_id"]
    assert folder(stack, address, "drafts") == []
    stack.settle()  # the Sent Items copy is notified: it is the message Enrollio sent, not a skip (R9 is inbound)
    assert skips(stack, user_id) == []
    [message] = thread(stack, user_id, answer["thread_id"])["messages"]
    [attachment] = message["attachments"]
    assert (attachment["name"], attachment["size"]) == ("term-schedule.pdf", len(data))
    download = stack.enrollio.call("GET", attachment["download"], params={"user_id": user_id})
    assert sha(download.content) == sha(data)


@pytest.mark.parametrize("size", [3 * MiB, 3 * MiB - 1], ids=["3 MiB", "3 MiB - 1"])
def test_attachments_at_the_3_mib_boundary_go_through(stack: Stack, user_id: str, size: int) -> None:
    address = connected(stack, user_id, "upload.edge")
    data = file_bytes(size, f"edge-{size}")
    response = post_send(stack, email(user_id, ("scan.pdf", data)))
    assert response.status_code == 200, response.text
    [delivery] = outbound(stack, address)
    assert [(a["size"], a["sha256"]) for a in delivery["attachments"]] == [(size, sha(data))]


def test_small_attachments_still_go_in_one_post_each(stack: Stack, user_id: str) -> None:
    address = connected(stack, user_id, "upload.small")
    files = [("a.pdf", file_bytes(1000, "a")), ("b.pdf", file_bytes(2_900_000, "b"))]
    stack.emulator.log.clear()
    assert post_send(stack, email(user_id, *files)).status_code == 200
    routes = mailbox_routes(stack, address)
    assert routes["POST /users/{id}/messages/{id}/attachments"] == 2
    assert UPLOAD_ROUTE not in routes
    [delivery] = outbound(stack, address)
    assert [a["sha256"] for a in delivery["attachments"]] == [sha(d) for _, d in files]


def test_a_message_over_the_limit_is_a_413_naming_the_limit_before_graph_is_asked(stack: Stack, user_id: str) -> None:
    address = connected(stack, user_id, "upload.over")
    stack.emulator.log.clear()
    # 11 MiB: under the limit in raw bytes, 15 MiB as Exchange counts it (encoded, CONTRACT.md section 5), which
    # Exchange would refuse after 11 MiB were uploaded.
    response = post_send(stack, email(user_id, ("huge.pdf", file_bytes(11 * MiB, "huge"))))
    assert response.status_code == 413
    problem = response.json()
    assert str(LIMIT) in problem["message"] and "huge.pdf" in problem["message"] and "encoded" in problem["message"]
    assert {"field": "attachments", "limit": str(LIMIT)}.items() <= problem["fields"][0].items()
    assert mailbox_routes(stack, address) == {}  # nothing reached Graph


def test_a_body_over_graphs_request_limit_is_a_413_naming_it_before_graph_is_asked(stack: Stack, user_id: str) -> None:
    # 2.1 MB of UTF-8, well within the message size limit, but 4.2 MB as JSON (each "é" is 6 bytes, \u00e9): over
    # the 4 MiB Graph takes in one request (CONTRACT.md section 5), which it refuses with a 400.
    address = connected(stack, user_id, "request.limit")
    stack.emulator.log.clear()
    response = post_send(stack, email(user_id, html="<p>" + "é" * 700_000 + "</p>"))
    assert response.status_code == 413, response.text
    problem = response.json()
    assert {"field": "html", "limit": str(4 * MiB)}.items() <= problem["fields"][0].items()
    assert "nothing was sent" in problem["message"]
    assert mailbox_routes(stack, address) == {}  # nothing reached Graph
    assert outbound(stack, address) == []


def test_a_413_from_graph_on_a_request_names_graphs_request_limit_not_the_tenants(stack: Stack, user_id: str) -> None:
    # A 413 answers one request that was too big (CONTRACT.md section 5, msgraph-sdk-java#52), not the tenant's
    # message size limit (ErrorMessageSizeExceeded): telling the user "the tenant's limit is lower" would be untrue.
    address = connected(stack, user_id, "request.413")
    stack.emulator.faults.configure(fail_paths={"/attachments": {"status": 413, "method": "POST"}})
    response = post_send(stack, email(user_id, ("a.pdf", file_bytes(1000, "a"))))
    assert response.status_code == 413, response.text
    problem = response.json()
    assert {"field": "attachments.0", "limit": str(4 * MiB)}.items() <= problem["fields"][0].items()
    assert "tenant" not in problem["message"] and "nothing was sent" in problem["message"]
    assert folder(stack, address, "drafts") == [] and outbound(stack, address) == []


def test_graph_refusing_the_message_size_is_a_413_naming_the_limit_and_nothing_is_left(
    stack: Stack, user_id: str
) -> None:
    address = connected(stack, user_id, "upload.tenant")
    stack.mail_world("POST", "mail/limits", {"max_message_bytes": 8 * MiB})  # the tenant's limit is lower
    response = post_send(stack, email(user_id, ("term-schedule.pdf", file_bytes(10 * MiB))))
    assert response.status_code == 413, response.text
    problem = response.json()
    assert "ErrorMessageSizeExceeded" in problem["message"] and str(LIMIT) in problem["message"]
    assert "nothing was sent" in problem["message"]
    assert folder(stack, address, "drafts") == [] and folder(stack, address, "sentitems") == []
    assert outbound(stack, address) == []


def test_a_range_refused_once_part_way_is_retried_and_the_file_arrives_whole(stack: Stack, user_id: str) -> None:
    address = connected(stack, user_id, "upload.flaky")
    data = file_bytes(10 * MiB, "flaky")
    stack.emulator.faults.configure(
        fail_paths={"AttachmentSessions": {"status": 503, "method": "PUT", "after": 1, "times": 1}},
        retry_after_seconds=0.2,
    )
    response = post_send(stack, email(user_id, ("schedule.pdf", data)))
    assert response.status_code == 200, response.text
    [delivery] = outbound(stack, address)
    assert [a["sha256"] for a in delivery["attachments"]] == [sha(data)]
    assert len(folder(stack, address, "sentitems")) == 1


@pytest.mark.parametrize(("refusal", "status"), [(503, 503), (400, 502)], ids=["unavailable", "refused"])
def test_a_range_refused_for_good_part_way_leaves_nothing_half_sent_and_says_why(
    stack: Stack, user_id: str, refusal: int, status: int
) -> None:
    address = connected(stack, user_id, "upload.broken")
    key, body = uuid.uuid4().hex, email(user_id, ("schedule.pdf", file_bytes(10 * MiB, "broken")))
    stack.emulator.faults.configure(
        fail_paths={"AttachmentSessions": {"status": refusal, "method": "PUT", "after": 1}}, retry_after_seconds=0.5
    )
    response = post_send(stack, body, key)
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert "schedule.pdf" in message and "nothing was sent" in message
    if status == 503:
        assert int(response.headers["Retry-After"]) >= 1
    assert folder(stack, address, "drafts") == []  # the draft with its half upload is deleted
    assert folder(stack, address, "sentitems") == [] and outbound(stack, address) == []
    stack.emulator.faults.reset()
    again = post_send(stack, body, key)  # the key was released: the same call now sends, once
    assert again.status_code == 200, again.text
    assert len(folder(stack, address, "sentitems")) == 1
    assert len(thread(stack, user_id, again.json()["thread_id"])["messages"]) == 1


@pytest.mark.parametrize("lost", [2, 3], ids=["a middle range", "the last range"])
def test_a_range_stored_whose_answer_was_lost_is_a_503_and_the_retry_sends_once(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch, lost: int
) -> None:
    # The connection drops after Graph stored the range: PUT again, it is out of order (416), or, for the last
    # range, the finished session is gone (404). Neither means the upload is broken for good.
    from sync_core.send_outlook import GraphBusy

    address = connected(stack, user_id, "upload.lost")
    key, data = uuid.uuid4().hex, file_bytes(10 * MiB, "lost")
    raw = json.dumps(email(user_id, ("schedule.pdf", data))).encode()
    real_put, seen = requests.Session.put, []

    def answer_lost(self: requests.Session, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = real_put(self, url, *args, **kwargs)
        if "AttachmentSessions" in url:
            seen.append(response.status_code)
            if len(seen) == lost:
                response.close()
                raise requests.ConnectionError("connection reset after the range was sent")
        return response

    monkeypatch.setattr(requests.Session, "put", answer_lost)
    with pytest.raises(GraphBusy) as busy:
        send(key, raw, stack.services)
    monkeypatch.undo()
    assert seen[lost - 1] in (200, 201) and seen[lost] in (404, 416)  # stored, then refused as already taken
    assert busy.value.status == 503 and busy.value.retry_after >= 1
    assert "schedule.pdf" in busy.value.message and "retry later with the same Idempotency-Key" in busy.value.message
    assert folder(stack, address, "drafts") == [] and folder(stack, address, "sentitems") == []
    assert outbound(stack, address) == []
    again = send(key, raw, stack.services)  # the key was released: the retry sends, once
    assert again.status == 200
    [delivery] = outbound(stack, address)
    assert [a["sha256"] for a in delivery["attachments"]] == [sha(data)]
    assert len(folder(stack, address, "sentitems")) == 1


def test_a_retry_with_the_same_key_after_an_upload_session_send_sends_once(stack: Stack, user_id: str) -> None:
    address = connected(stack, user_id, "upload.retry")
    key, body = uuid.uuid4().hex, email(user_id, ("schedule.pdf", file_bytes(5 * MiB, "retry")))
    first, second = post_send(stack, body, key), post_send(stack, body, key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(folder(stack, address, "sentitems")) == 1 and len(outbound(stack, address)) == 1


class Killed(BaseException):
    """The host killing the invocation (function timeout, scale-in): no cleanup runs."""


def test_a_call_that_died_part_way_through_an_upload_is_taken_over_and_sends_once(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_core.adapters import upload

    address = connected(stack, user_id, "upload.killed")
    key = uuid.uuid4().hex
    raw = json.dumps(email(user_id, ("schedule.pdf", file_bytes(10 * MiB, "killed")))).encode()
    original = upload.UploadClient.put_range
    calls: list[int] = []

    def dies_on_the_second_range(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise Killed()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(upload.UploadClient, "put_range", dies_on_the_second_range)
    monkeypatch.setattr(IdempotencyStore, "release", lambda *a, **k: None)  # a killed process releases nothing
    with pytest.raises(Killed):
        send(key, raw, stack.services)
    monkeypatch.undo()
    claim = IdempotencyStore(stack.services.storage.tables).get(user_id, key)
    assert claim is not None and not claim.done
    assert claim.prepared["route"] == "outlook" and claim.draft_path  # written before the upload began
    assert len(folder(stack, address, "drafts")) == 1 and folder(stack, address, "sentitems") == []
    later = Services(stack.settings, FixedClock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=7)))
    resolved = send(key, raw, later)
    assert resolved.status == 200
    assert folder(stack, address, "drafts") == []  # the dead call's draft is gone
    [copy] = folder(stack, address, "sentitems")
    assert copy["id"] == resolved.body["message_id"]
    assert len(outbound(stack, address)) == 1
    assert send(key, raw, stack.services).body == resolved.body


class MovingClock:
    """A call's clock that the test moves on (the real send takes seconds; the lease is minutes)."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return self.at


def minutes_later(stack: Stack, minutes: int) -> Services:
    return Services(stack.settings, FixedClock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)))


def test_a_call_that_outlived_its_lease_leaves_the_retrys_claim_alone_and_nothing_is_sent_twice(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Call A is slow (a large upload); its lease runs out and a retry, B, takes the key over, deletes A's draft and
    # sends. A's next range then finds its session gone. A must neither send nor release B's completed claim:
    # otherwise a third call with the key would claim it afresh and send the message a second time.
    from sync_core.adapters import upload

    address = connected(stack, user_id, "upload.outlived")
    key = uuid.uuid4().hex
    raw = json.dumps(email(user_id, ("schedule.pdf", file_bytes(10 * MiB, "outlived")))).encode()
    original, retry = upload.UploadClient.put_range, {"running": False, "answer": None}

    def the_retry_takes_over_before_the_second_range(self: Any, url: str, start: int, *args: Any, **kw: Any) -> Any:
        if start > 0 and not retry["running"]:
            retry["running"] = True
            retry["answer"] = send(key, raw, minutes_later(stack, 7))  # B, after A's lease
        return original(self, url, start, *args, **kw)

    monkeypatch.setattr(upload.UploadClient, "put_range", the_retry_takes_over_before_the_second_range)
    with pytest.raises(Problem) as slow:
        send(key, raw, stack.services)  # A
    monkeypatch.undo()
    assert slow.value.status == 503 and "took the send over" in slow.value.message
    taken_over = retry["answer"]
    assert isinstance(taken_over, Json) and taken_over.status == 200
    third = send(key, raw, stack.services)
    assert (third.body, third.headers.get("Idempotent-Replayed")) == (taken_over.body, "true")
    assert len(folder(stack, address, "sentitems")) == 1 and len(outbound(stack, address)) == 1
    assert folder(stack, address, "drafts") == []


def test_a_send_that_runs_past_its_deadline_stops_before_sending_and_the_retry_sends_once(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No step starts after SEND_DEADLINE (4 minutes) from the claim: a retry may take the key over at 6.
    from sync_core.adapters import upload

    address = connected(stack, user_id, "upload.deadline")
    key, clock = uuid.uuid4().hex, MovingClock()
    raw = json.dumps(email(user_id, ("schedule.pdf", file_bytes(10 * MiB, "deadline")))).encode()
    original = upload.UploadClient.put_range

    def slow_second_range(self: Any, url: str, start: int, *args: Any, **kw: Any) -> Any:
        if start > 0:
            clock.at += dt.timedelta(minutes=5)  # the first range took minutes
        return original(self, url, start, *args, **kw)

    monkeypatch.setattr(upload.UploadClient, "put_range", slow_second_range)
    with pytest.raises(Problem) as late:
        send(key, raw, Services(stack.settings, clock))
    monkeypatch.undo()
    assert late.value.status == 503 and late.value.retry_after and "nothing was sent" in late.value.message
    assert folder(stack, address, "drafts") == [] and outbound(stack, address) == []
    again = send(key, raw, stack.services)  # released: the retry sends, once
    assert again.status == 200
    assert len(folder(stack, address, "sentitems")) == 1 and len(outbound(stack, address)) == 1


def test_a_call_whose_key_was_taken_over_before_its_send_does_not_send(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim is read back right before Graph is asked to send: a retry that took it over may be deciding, from
    # this very draft, whether the message went out.
    from sync_core.adapters import upload

    address = connected(stack, user_id, "upload.confirm")
    key = uuid.uuid4().hex
    raw = json.dumps(email(user_id, ("schedule.pdf", file_bytes(5 * MiB, "confirm")))).encode()
    keys = IdempotencyStore(stack.services.storage.tables)
    original = upload.UploadClient.put_range

    def taken_over_after_the_last_range(self: Any, url: str, start: int, end: int, total: int, *a: Any) -> Any:
        following = original(self, url, start, end, total, *a)
        if following == total:
            recorded = keys.get(user_id, key)
            assert recorded is not None
            assert keys.take_over(user_id, key, recorded, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=7))
        return following

    monkeypatch.setattr(upload.UploadClient, "put_range", taken_over_after_the_last_range)
    with pytest.raises(Problem) as stopped:
        send(key, raw, stack.services)
    monkeypatch.undo()
    assert stopped.value.status == 503
    assert folder(stack, address, "sentitems") == [] and outbound(stack, address) == []  # A sent nothing
    resolved = send(key, raw, minutes_later(stack, 14))  # after the taker's lease: it finds nothing sent, sends
    assert resolved.status == 200
    assert len(folder(stack, address, "sentitems")) == 1 and len(outbound(stack, address)) == 1


# -- inline images ------------------------------------------------------------------------------------------------

HTML = '<p>Our studio:</p><p><img src="cid:logo@enrollio"></p><p>How to find us:</p><p><img src="cid:map@enrollio"></p>'


def inline(name: str, cid: str, data: bytes) -> dict[str, Any]:
    return {
        "name": name,
        "content_type": "image/png",
        "content_base64": base64.b64encode(data).decode(),
        "is_inline": True,
        "content_id": cid,
    }


def test_an_html_email_with_two_inline_images_goes_out_and_comes_back_with_its_content_ids(
    stack: Stack, user_id: str
) -> None:
    address = connected(stack, user_id, "inline.images")
    logo, map_ = file_bytes(2000, "logo"), file_bytes(3_500_000, "map")  # one posted, one through a session
    body = email(
        user_id,
        html=HTML,
        attachments=[inline("logo.png", "logo@enrollio", logo), inline("map.png", "map@enrollio", map_)],
    )
    response = post_send(stack, body)
    assert response.status_code == 200, response.text
    sent = response.json()
    [delivery] = outbound(stack, address)
    assert [(a["name"], a["isInline"], a["contentId"], a["sha256"]) for a in delivery["attachments"]] == [
        ("logo.png", True, "logo@enrollio", sha(logo)),
        ("map.png", True, "map@enrollio", sha(map_)),
    ]
    assert 'src="cid:logo@enrollio"' in delivery["body"]["content"]
    quoted = "<p>Thanks, see you there!</p><hr>" + HTML
    stack.mail_world(
        "POST",
        f"mail/{address}/deliver",
        {
            "from": CONTACT,
            "subject": "RE: Term schedule",
            "in_reply_to": sent["internet_message_id"],
            "body_html": quoted,
            "attachments": [
                {"kind": "inline", "name": "logo.png", "content_id": "logo@enrollio", "size": 2000},
                {"kind": "inline", "name": "map.png", "content_id": "map@enrollio", "size": 500},
            ],
        },
    )

    def both() -> list[dict[str, Any]] | None:
        stack.flush()
        messages = thread(stack, user_id, sent["thread_id"])["messages"]
        return messages if len(messages) == 2 else None

    ours, reply = wait_until(both, what="the contact's reply")
    for message in (ours, reply):
        assert [(a["name"], a["is_inline"], a["content_id"]) for a in message["attachments"]] == [
            ("logo.png", True, "logo@enrollio"),
            ("map.png", True, "map@enrollio"),
        ]
        for a in message["attachments"]:
            assert f"cid:{a['content_id']}" in message["body"]["content"]  # Enrollio can place each image


def test_inline_content_ids_come_back_even_when_graph_refuses_the_type_cast(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CONTRACT.md section 5: the cast form that selects contentId is not verified against a live tenant. Should
    # Graph refuse it, messages still sync (one refused request per process), inline images with their contentId.
    from sync_core import content_ids

    address = connected(stack, user_id, "inline.nocast")
    sent = post_send(stack, email(user_id, html=HTML)).json()
    stack.settle()
    monkeypatch.setattr(content_ids, "FORM", content_ids._Form())  # a fresh process, at a tenant refusing the cast
    stack.emulator.faults.configure(fail_paths={"microsoft.graph.fileAttachment/contentId": 400})
    stack.emulator.log.clear()
    for text in ("Thanks, see you there!", "One more thing"):
        stack.mail_world(
            "POST",
            f"mail/{address}/deliver",
            {
                "from": CONTACT,
                "subject": "RE: Term schedule",
                "in_reply_to": sent["internet_message_id"],
                "body_html": f"<p>{text}</p><hr>" + HTML,
                "attachments": [
                    {"kind": "inline", "name": "logo.png", "content_id": "logo@enrollio", "size": 2000},
                    {"kind": "inline", "name": "map.png", "content_id": "map@enrollio", "size": 500},
                ],
            },
        )

    def both() -> list[dict[str, Any]] | None:
        stack.flush()
        messages = thread(stack, user_id, sent["thread_id"])["messages"]
        return messages if len(messages) == 3 else None

    for reply in wait_until(both, what="the contact's two replies")[1:]:
        assert [(a["name"], a["is_inline"], a["content_id"]) for a in reply["attachments"]] == [
            ("logo.png", True, "logo@enrollio"),
            ("map.png", True, "map@enrollio"),
        ]
    assert skips(stack, user_id) == []
    routes = mailbox_routes(stack, address)
    assert routes["GET /users/{id}/messages/{id}/attachments/{id}"] == 4  # each inline image's contentId
    refused = [r for r in stack.emulator.log.snapshot() if r.status == 400 and "contentId" in unquote(r.query)]
    assert len(refused) == 1  # the cast is asked for once in this process, then no more


@pytest.mark.parametrize(
    ("attachment", "problem"),
    [
        ({"is_inline": True}, "content_id"),
        ({"is_inline": True, "content_id": "logo\r\nBcc: x@evil.example"}, "content_id"),
        ({"is_inline": True, "content_id": "<logo@enrollio>"}, "content_id"),
        ({"is_inline": True, "content_id": ""}, "content_id"),
    ],
    ids=["missing", "CR LF", "angle brackets", "empty"],
)
def test_a_bad_content_id_is_a_400_naming_it(
    stack: Stack, user_id: str, attachment: dict[str, Any], problem: str
) -> None:
    connected(stack, user_id, "inline.bad")
    item = {"name": "logo.png", "content_base64": base64.b64encode(b"png").decode(), **attachment}
    response = post_send(stack, email(user_id, attachments=[item]))
    assert response.status_code == 400, response.text
    assert [f["field"] for f in response.json()["fields"]] == [f"attachments.0.{problem}"]


# -- what a message row can hold ----------------------------------------------------------------------------------


def labelled(index: int, label: int, longer_name: int = 0) -> dict[str, Any]:
    """A tiny inline image whose name, content type and content id are ``label`` characters each."""
    tag = f"{index:02d}"
    return {
        "name": tag + "n" * (label - 6 + longer_name) + ".png",
        "content_type": "image/png; x=" + "p" * (label - 13),
        "content_base64": base64.b64encode(b"png").decode(),
        "is_inline": True,
        "content_id": tag + "c" * (label - 2),
    }


def test_attachments_at_their_longest_labels_are_sent_stored_and_read_back_whole(stack: Stack, user_id: str) -> None:
    """50 attachments whose names, content types and content ids are 255 characters each: more than one table
    property holds (their JSON is about 39,000 characters), so the message row keeps the whole list in the blob
    beside it; no row-sized input limit refuses them (that was a 400 naming attachments)."""
    address = connected(stack, user_id, "row.longest")
    attachments = [labelled(i, 255) for i in range(MAX_ATTACHMENTS)]
    response = post_send(stack, email(user_id, attachments=attachments))
    assert response.status_code == 200, response.text
    [message] = thread(stack, user_id, response.json()["thread_id"])["messages"]
    assert [(a["name"], a["content_type"], a["content_id"]) for a in message["attachments"]] == [
        (a["name"], a["content_type"], a["content_id"]) for a in attachments
    ]
    assert len(outbound(stack, address)) == 1
