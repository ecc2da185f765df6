"""The one rule for ids that become table keys, media types we echo in headers, and return URLs: as properties."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sync_core.connect import ConnectLink, _back
from sync_core.ids import MAX_ID_LENGTH, table_key
from sync_core.results import BadRequest, Binary

# Azure Tables' documented refusals in keys, and '%', which breaks some Table operations (sync_core/ids.py).
REFUSED = set("/\\#?%") | {chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}
BOUNDED = settings(max_examples=300, derandomize=True, database=None)


@BOUNDED
@given(st.text(max_size=MAX_ID_LENGTH + 10))
@example("a/b")
@example("x" * MAX_ID_LENGTH)
@example("\U0001f600" * MAX_ID_LENGTH)
def test_an_id_is_accepted_exactly_when_azure_tables_would_store_it(value: str) -> None:
    fits = 1 <= len(value) <= MAX_ID_LENGTH and not REFUSED & set(value)
    try:
        accepted = table_key("user_id", value)
    except BadRequest as refused:
        assert not fits
        assert refused.fields[0]["field"] == "user_id"
        return
    assert fits
    assert accepted == value
    assert len(value.encode("utf-16-le")) <= 1024  # Azure's limit: 1 KiB per key
    assert len(value.encode()) <= 1024


@BOUNDED
@given(st.text(max_size=300))
@example("text/plain\r\nSet-Cookie: a=b")
@example('text/plain; name="\U0001f600"')
def test_a_download_type_is_the_stored_one_only_when_it_fits_in_a_header(stored: str) -> None:
    served = Binary(b"", stored, "f").safe_content_type
    assert served in (stored, "application/octet-stream")
    assert served.isascii() and served.isprintable()
    assert re.fullmatch(r"[^/]+/[^/]+", served.split(";")[0])


@BOUNDED
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=300))  # surrogates included
@example("\ud800report.pdf")
@example("r\u00e9sum\u00e9 \U0001f600.pdf")
def test_a_download_file_name_always_fits_in_a_header(name: str) -> None:
    """Review of i12, finding 8: a lone surrogate in a stored name (Graph's JSON may carry one) made every download
    of it a 500."""
    disposition = Binary(b"", "text/plain", name).content_disposition
    assert disposition.isascii() and disposition.isprintable()
    prefix = "attachment; filename*=UTF-8''"
    assert disposition.startswith(prefix)
    assert unquote(disposition.removeprefix(prefix)) == re.sub("[\ud800-\udfff]", "\ufffd", name)


@pytest.mark.parametrize(
    "url",
    [
        "https://[app.enrollio.example/x",
        "https://app.enrollio.example:99999/x",
        "https://user@app.enrollio.example/x",
        "https://app.enrollio.example/a/../b",
        "https://app.enrollio.example/a/%2e%2e/b",
        "https://app.enrollio.example/\u00e9",
        "https://app.enrollio.example/a b",
        "javascript://app.enrollio.example/%0aalert(1)",
        "//app.enrollio.example/x",
    ],
)
def test_a_malformed_return_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConnectLink(user_id="u", account_id="a", return_url=url, nonce="n" * 16)
    assert [e["loc"] for e in caught.value.errors()] == [("return_url",)]


def test_the_outcome_goes_into_the_query_before_a_fragment() -> None:
    back = _back("https://app.enrollio.example/settings?tab=email#top", outcome="connected")
    assert back.location == "https://app.enrollio.example/settings?tab=email&outcome=connected#top"
