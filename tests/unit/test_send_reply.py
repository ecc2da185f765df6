"""The MIME of a reply whose thread has no message left in the mailbox (no I/O)."""

from __future__ import annotations

import email
import email.policy
import json
from typing import Any

import pytest

from sync_core.results import BadRequest
from sync_core.send_reply import mime_reply, reply_subject
from sync_core.send_request import SendRequest, parse_request


def request(**fields: Any) -> SendRequest:
    base = {"user_id": "u", "account_id": "a", "kind": "individual", "contact": {"email": "pat@home.example"}}
    return SendRequest.model_validate({**base, "html": "<p>Of course!</p>", **fields})


def parsed(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_the_reply_names_the_threads_last_message_and_its_history() -> None:
    ids = [f"<m{i}@school.example>" for i in range(3)]
    raw = mime_reply(request(cc=["office@school.example"]), "Trial class", ids)
    assert b"\r\n" in raw  # CRLF, as MIME travels
    message = parsed(raw)
    assert (message["To"], message["Cc"], message["Subject"]) == (
        "pat@home.example",
        "office@school.example",
        "RE: Trial class",
    )
    assert (message["In-Reply-To"], message["References"]) == ("<m2@school.example>", " ".join(ids))
    body = message.get_body(("html",))
    assert body is not None and "Of course!" in body.get_content()


def test_a_long_thread_keeps_its_first_and_newest_message_ids() -> None:
    ids = [f"<m{i}@school.example>" for i in range(25)]
    references = parsed(mime_reply(request(), "x", ids))["References"].split()
    assert references == [ids[0], *ids[-9:]]


@pytest.mark.parametrize(
    ("subject", "expected"), [("Trial", "RE: Trial"), ("RE: Trial", "RE: Trial"), ("re: a\r\nBcc: x", "re: a Bcc: x")]
)
def test_the_subject_is_outlooks_reply_subject_on_one_line(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_an_address_with_a_line_break_is_a_400_not_a_header() -> None:
    hostile = "pat@home.example\r\nBcc: spy@evil.example"
    body = {"user_id": "u", "account_id": "a", "kind": "individual", "contact": {"email": "pat@home.example"}}
    with pytest.raises(BadRequest) as at_the_boundary:  # the model's address rule refuses it first
        parse_request(json.dumps({**body, "text": "hi", "to": [hostile]}).encode())
    assert [f["field"] for f in at_the_boundary.value.fields] == ["to.0"]
    # and the MIME writer still refuses to turn one into a header, whatever reaches it
    with pytest.raises(BadRequest) as refused:
        mime_reply(request().model_copy(update={"to": [hostile]}), "x", ["<m@s.example>"])
    assert refused.value.fields == [{"field": "to"}]
