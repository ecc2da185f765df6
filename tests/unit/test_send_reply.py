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


# Message-IDs as Exchange Online writes them: 80 characters (CONTRACT.md section 4), and longer ones.
EXCHANGE_IDS = [
    "<MN2PR12MB35989F684730625B10ABB6348ED60@MN2PR12MB3598.namprd12.prod.outlook.com>",
    "<DM6PR11MB32927310973DCB896EF9E2AFF1929@DM6PR11MB3292.namprd11.prod.outlook.com>",
    "<" + "A" * 120 + "@BY5PR11MB4034.namprd11.prod.outlook.com>",
]


def header_lines(raw: bytes) -> list[str]:
    """The header section's physical lines, as they travel."""
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")


def test_exchange_length_message_ids_are_written_as_they_are_never_encoded() -> None:
    raw = mime_reply(request(), "Trial class", EXCHANGE_IDS)
    lines = header_lines(raw)
    assert f"In-Reply-To: {EXCHANGE_IDS[-1]}" in lines
    start = lines.index(f"References: {EXCHANGE_IDS[0]}")
    assert lines[start + 1 : start + 3] == [f" {EXCHANGE_IDS[1]}", f" {EXCHANGE_IDS[2]}"]  # folded between ids
    assert b"=?" not in raw.split(b"\r\n\r\n", 1)[0]  # no RFC 2047 encoded-word (RFC 2047 section 5)
    message = parsed(raw)
    assert (message["In-Reply-To"], message["References"].split()) == (EXCHANGE_IDS[-1], EXCHANGE_IDS)


def test_a_stored_id_that_is_not_a_message_id_is_left_out_of_the_headers() -> None:
    hostile = ["<a b@x.example>", "no-brackets@x.example", "<two@x.example><ids@x.example>", "<é@x.example>"]
    raw = mime_reply(request(), "Trial class", [EXCHANGE_IDS[0], *hostile])
    message = parsed(raw)
    assert (message["In-Reply-To"], message["References"]) == (EXCHANGE_IDS[0], EXCHANGE_IDS[0])
    assert "In-Reply-To" not in parsed(mime_reply(request(), "Trial class", hostile))


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
    assert refused.value.fields == [{"field": "to.0"}]


@pytest.mark.parametrize(
    ("field", "addresses", "bad"),
    [
        ("to", ["a,evil@x.io"], "to.0"),
        ("cc", ["office@school.example", "b;c@x.io"], "cc.1"),
        ("bcc", ["<spy@evil.example>"], "bcc.0"),
        ("cc", ['"Pat" pat@home.example'], "cc.0"),
        ("to", ["pat (home) @home.example"], "to.0"),
        ("to", ["pat@home.example evil@x.io"], "to.0"),
        ("to", ["a:b@x.io"], "to.0"),
        ("to", ["pat@[10.0.0.1]"], "to.0"),
    ],
)
def test_a_recipient_that_is_not_one_address_is_a_400_naming_it(field: str, addresses: list[str], bad: str) -> None:
    body = {"user_id": "u", "account_id": "a", "kind": "individual", "contact": {"email": "pat@home.example"}}
    with pytest.raises(BadRequest) as refused:
        parse_request(json.dumps({**body, "text": "hi", field: addresses}).encode())
    assert [f["field"] for f in refused.value.fields] == [bad]


def test_each_recipient_is_one_address_in_the_mime_and_unusual_ones_are_written_right() -> None:
    to = ["o'neil+term@school.example", "pat@home.example"]
    message = parsed(mime_reply(request(to=to, cc=["jons@exämple.se"], bcc=["a@b.example"]), "x", []))
    assert [a.addr_spec for a in message["To"].addresses] == to
    assert [a.addr_spec for a in message["Cc"].addresses] == ["jons@xn--exmple-cua.se"]  # IDNA, never encoded
    assert [a.addr_spec for a in message["Bcc"].addresses] == ["a@b.example"]
    # a list smuggled past the model is still refused, naming the entry, never written as two recipients
    with pytest.raises(BadRequest) as refused:
        mime_reply(request().model_copy(update={"cc": ["a@b.example", "x@y.example,evil@x.io"]}), "x", [])
    assert refused.value.fields == [{"field": "cc.1"}]
    # a non-ASCII local part needs SMTPUTF8, which a MIME reply cannot count on: a 400 naming it, nothing sent
    with pytest.raises(BadRequest) as unwritable:
        mime_reply(request(to=["pat@home.example", "jöns@example.se"]), "x", [])
    assert unwritable.value.fields == [{"field": "to.1"}]
