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


def encoded_size(size: int) -> int:
    """``size`` bytes as MIME carries them: base64 in lines of at most 76 characters, each ending in CRLF (RFC 2045
    section 6.8). CONTRACT.md section 5: Exchange counts a message's encoded size."""
    return len(base64.encodebytes(bytes(size)).replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 1000, 3 * 1024 * 1024])
def test_the_encoded_size_is_the_size_of_base64_in_mime_lines(size: int) -> None:
    from sync_core import send_attachments

    assert send_attachments.encoded_size(size) == encoded_size(size)


def test_a_message_over_the_limit_encoded_names_the_limit_and_every_file() -> None:
    body = "<p>" + "x" * 93 + "</p>"  # 100 bytes
    limit = encoded_size(100) + encoded_size(400) + encoded_size(500)
    fits = request(file("a.pdf", b"a" * 400), file("b.pdf", b"b" * 500), html=body)
    assert [a.size for a in outgoing_attachments(fits, limit)] == [400, 500]
    over = request(file("a.pdf", b"a" * 400), file("b.pdf", b"b" * 502), html=body)  # 501 encodes as 500 does
    with pytest.raises(PayloadTooLarge) as refused:
        outgoing_attachments(over, limit)
    assert refused.value.status == 413
    assert "'a.pdf' 400 bytes" in refused.value.message and "'b.pdf' 502 bytes" in refused.value.message
    assert f"the limit is {limit} bytes" in refused.value.message and "MAX_MESSAGE_BYTES" in refused.value.message
    size = str(encoded_size(100) + encoded_size(400) + encoded_size(502))
    assert refused.value.fields == [{"field": "attachments", "limit": str(limit), "size": size}]


def test_a_message_under_the_limit_in_raw_bytes_but_over_it_encoded_is_a_413() -> None:
    # What Exchange would refuse after the upload (CONTRACT.md section 5) is refused before anything is sent.
    with pytest.raises(PayloadTooLarge) as refused:
        outgoing_attachments(request(file("a.pdf", b"a" * 800), html="<p>hi</p>"), 1000)  # 809 raw bytes
    assert refused.value.fields[0]["size"] == str(encoded_size(9) + encoded_size(800))


def test_a_message_that_cannot_pass_the_upload_throttle_in_one_window_is_a_413() -> None:
    # Outlook takes 150 MB of uploads per 5 minutes per mailbox (CONTRACT.md section 8): a send that uploads
    # more could never finish. Here with a window of 20,000 bytes, for a test that does not build 150 MB.
    files = [file(f"{i}.pdf", bytes(3000)) for i in range(3)]  # 4,000 characters of base64 each, in a POST
    assert len(outgoing_attachments(request(*files), 10**9, upload_window=30_000)) == 3
    with pytest.raises(PayloadTooLarge) as refused:
        outgoing_attachments(request(*files), 10**9, upload_window=20_000)
    assert "upload throttle" in refused.value.message
    assert refused.value.fields[0]["limit"] == "20000"


@pytest.mark.parametrize(("value", "accepted"), [("150000000", True), (str(150 * 1024 * 1024), False)])
def test_the_message_size_setting_stops_at_what_the_upload_throttle_takes(value: str, accepted: bool) -> None:
    from pydantic import ValidationError

    from sync_core.settings import Settings

    required = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "GRAPH_CLIENT_ID": "x",
        "GRAPH_CLIENT_SECRET": "x",
        "PUBLIC_BASE_URL": "https://sync.example",
        "ENROLLIO_SHARED_SECRET": "x",
        "TOKEN_ENCRYPTION_KEYS": "x",
    }
    if accepted:
        assert Settings(**required, MAX_MESSAGE_BYTES=value).max_message_bytes == int(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValidationError, match="MAX_MESSAGE_BYTES"):
            Settings(**required, MAX_MESSAGE_BYTES=value)  # type: ignore[arg-type]
