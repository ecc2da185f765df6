"""A send's attachments are measured and checked from their base64, without decoding them (no I/O)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from sync_core.results import BadRequest
from sync_core.send_attachments import POST_LIMIT, PayloadTooLarge, outgoing_attachments
from sync_core.send_request import (
    SendRequest,
    parse_request,
)


def request(*attachments: dict[str, Any], html: str = "<p>hi</p>") -> SendRequest:
    return SendRequest.model_validate(
        {
            "user_id": "u",
            "account_id": "a",
            "kind": "individual",
            "contact": {"email": "pat@home.example"},
            "html": html,
            "attachments": list(attachments),
        }
    )


def file(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "content_base64": base64.b64encode(data).decode()}


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, POST_LIMIT - 1, POST_LIMIT])
def test_the_size_is_the_decoded_length_and_the_way_in_follows_it(size: int) -> None:
    [attachment] = outgoing_attachments(request(file("a.bin", b"\xff" * size)), 10**9)
    assert attachment.size == size
    assert attachment.read().read() == b"\xff" * size
    assert attachment.needs_upload_session == (size >= POST_LIMIT)  # under 3 MB: one POST


@pytest.mark.parametrize("text", ["abc", "YWJjZA=", "Y"])
def test_base64_of_the_wrong_length_is_a_400_naming_the_field(text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        outgoing_attachments(request(file("ok.pdf", b"ok"), {"name": "bad.pdf", "content_base64": text}), 10**9)
    assert refused.value.fields == [{"field": "attachments.1.content_base64"}]
    assert "bad.pdf" in refused.value.message


@pytest.mark.parametrize("text", ["ab=c", "a===", "ab cd===", "YWJj\nZGVm", "ä" * 4])
def test_text_outside_the_base64_alphabet_is_a_400_naming_the_field(text: str) -> None:
    body = {"user_id": "u", "account_id": "a", "kind": "individual", "contact": {"email": "pat@home.example"}}
    attachments = [file("ok.pdf", b"ok"), {"name": "bad.pdf", "content_base64": text}]
    with pytest.raises(BadRequest) as refused:  # the request model admits only the alphabet (RFC 4648 section 4)
        parse_request(json.dumps({**body, "html": "<p>hi</p>", "attachments": attachments}).encode())
    assert [f["field"] for f in refused.value.fields] == ["attachments.1.content_base64"]


def test_a_message_over_the_limit_names_the_limit_and_every_file() -> None:
    body = "<p>" + "x" * 93 + "</p>"  # 100 bytes
    fits = request(file("a.pdf", b"a" * 400), file("b.pdf", b"b" * 500), html=body)
    assert [a.size for a in outgoing_attachments(fits, 1000)] == [400, 500]
    over = request(file("a.pdf", b"a" * 400), file("b.pdf", b"b" * 501), html=body)
    with pytest.raises(PayloadTooLarge) as refused:
        outgoing_attachments(over, 1000)
    assert refused.value.status == 413
    assert "'a.pdf' 400 bytes" in refused.value.message and "'b.pdf' 501 bytes" in refused.value.message
    assert "the limit is 1000 bytes" in refused.value.message and "MAX_MESSAGE_BYTES" in refused.value.message
    assert refused.value.fields == [{"field": "attachments", "limit": "1000", "size": "1001"}]
