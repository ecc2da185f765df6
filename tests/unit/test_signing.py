"""Enrollio request and connect-link signatures: what passes, and every way a forgery is refused."""

import datetime as dt
import hashlib
import hmac

import pytest

from sync_core.signing import (
    IDEMPOTENCY_HEADER,
    LINK_SIGNATURE_PARAM,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Unauthorized,
    canonical_request,
    canonical_target,
    sign_link,
    sign_request,
    verify_link,
    verify_request,
)

SECRET = b"shared-secret-for-tests"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
TS = int(NOW.timestamp())
BODY = b'{"user_id":"u1"}'
NONCE = "n0nce-0123456789abcdef"


def signed(secret: bytes = SECRET, ts: int = TS, nonce: str = NONCE, key: str = "key-1") -> dict[str, str]:
    return sign_request(secret, ts, "POST", "/api/send", BODY, nonce=nonce, idempotency_key=key)


def verify(headers: dict[str, str], method: str = "POST", path: str = "/api/send", body: bytes = BODY) -> None:
    verify_request(SECRET, headers, method, path, body, NOW, window_seconds=300)


def test_a_correctly_signed_request_passes_and_its_signature_expires_with_the_window() -> None:
    verified = verify_request(SECRET, signed(), "POST", "/api/send", BODY, NOW, window_seconds=300)
    assert verified.expires_at == NOW + dt.timedelta(seconds=300)
    assert signed()[SIGNATURE_HEADER] == f"v2={verified.signature}"


def test_the_canonical_string_is_the_documented_one() -> None:
    """README, The HTTP API: timestamp, nonce, METHOD, path?query, Idempotency-Key, each on its line, then the body."""
    message = canonical_request(str(TS), NONCE, "post", "/api/send?x=1", "key-1", BODY)
    assert message == f"{TS}\n{NONCE}\nPOST\n/api/send?x=1\nkey-1\n".encode() + BODY
    assert canonical_request(str(TS), NONCE, "GET", "/api/x", "", b"") == f"{TS}\n{NONCE}\nGET\n/api/x\n\n".encode()


def test_header_names_are_case_insensitive() -> None:
    verify({k.lower(): v for k, v in signed().items()})


def test_two_requests_alike_in_the_same_second_differ_by_their_nonce() -> None:
    assert signed(nonce="a" * 16)[SIGNATURE_HEADER] != signed(nonce="b" * 16)[SIGNATURE_HEADER]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered body", "bad signature"),
        ("other path", "bad signature"),
        ("other method", "bad signature"),
        ("wrong secret", "bad signature"),
        ("stale", "replay window"),
        ("future", "ahead"),
        ("missing", "missing"),
        ("not a number", "Unix seconds"),
        ("other scheme", "bad signature"),
        ("other idempotency key", "bad signature"),
        ("idempotency key dropped", "bad signature"),
        ("other nonce", "bad signature"),
        ("no nonce", NONCE_HEADER),
        ("short nonce", NONCE_HEADER),
    ],
)
def test_forged_requests_are_refused_with_a_reason(case: str, reason: str) -> None:
    headers = signed()
    method, path, body = "POST", "/api/send", BODY
    if case == "tampered body":
        body = b'{"user_id":"u2"}'
    elif case == "other path":
        path = "/api/users/u2/connections"
    elif case == "other method":
        method = "GET"
    elif case == "wrong secret":
        headers = signed(secret=b"another secret")
    elif case == "stale":
        headers = signed(ts=TS - 301)
    elif case == "future":
        headers = signed(ts=TS + 301)
    elif case == "missing":
        headers = {}
    elif case == "not a number":
        headers[TIMESTAMP_HEADER] = "yesterday"
    elif case == "other scheme":
        headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].replace("v2=", "v1=")
    elif case == "other idempotency key":
        headers[IDEMPOTENCY_HEADER] = "other"
    elif case == "idempotency key dropped":
        del headers[IDEMPOTENCY_HEADER]
    elif case == "other nonce":
        headers[NONCE_HEADER] = "x" * 22
    elif case == "no nonce":
        del headers[NONCE_HEADER]
    elif case == "short nonce":
        headers = signed(nonce="abc")
    with pytest.raises(Unauthorized, match=reason):
        verify(headers, method, path, body)


def link(**overrides: str) -> dict[str, str]:
    params = {"user_id": "u1", "account_id": "a1", "return_url": "https://app.enrollio.example/x", "exp": str(TS + 600)}
    return sign_link(SECRET, {**params, **overrides})


def test_a_signed_link_passes_until_it_expires() -> None:
    assert verify_link(SECRET, link(), NOW).expires_at == NOW + dt.timedelta(seconds=600)
    with pytest.raises(Unauthorized, match="expired"):
        verify_link(SECRET, link(), NOW + dt.timedelta(seconds=601))


@pytest.mark.parametrize("lifetime", [15 * 60 + 1, 10 * 365 * 24 * 3600, 10**30])
def test_a_link_living_longer_than_15_minutes_is_refused(lifetime: int) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify_link(SECRET, link(exp=str(TS + lifetime)), NOW)
    assert caught.value.field == "exp"
    verify_link(SECRET, link(exp=str(TS + 15 * 60)), NOW)


def test_a_link_with_any_parameter_changed_is_refused() -> None:
    params = link()
    params["user_id"] = "someone-else"
    with pytest.raises(Unauthorized, match="bad link signature"):
        verify_link(SECRET, params, NOW)


def test_a_link_without_signature_or_expiry_is_refused() -> None:
    params = link()
    del params[LINK_SIGNATURE_PARAM]
    with pytest.raises(Unauthorized, match="bad link signature"):
        verify_link(SECRET, params, NOW)
    no_expiry = sign_link(SECRET, {"user_id": "u1"})
    with pytest.raises(Unauthorized, match="'exp'"):
        verify_link(SECRET, no_expiry, NOW)


def _signed_with_timestamp_text(text: str) -> dict[str, str]:
    """Headers whose signature covers ``text`` as the timestamp, whatever it holds (a signer's own spelling)."""
    message = canonical_request(text, NONCE, "POST", "/api/send", "key-1", BODY)
    signature = hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    return {
        TIMESTAMP_HEADER: text,
        NONCE_HEADER: NONCE,
        SIGNATURE_HEADER: f"v2={signature}",
        IDEMPOTENCY_HEADER: "key-1",
    }


@pytest.mark.parametrize(
    "text",
    [
        "1" + "0" * 400,  # int() reads it; comparing it with a float overflowed: a 500 for anyone
        "9" * 4300,
        f"+{TS}",
        f" {TS}",
        f"{TS} ",
        f"{TS // 10_000}_{TS % 10_000:04d}",
        f"0{TS}",
        "\uff11" * 10,  # fullwidth digits: int() reads them too
        "",
    ],
)
def test_a_timestamp_is_one_to_twelve_ascii_digits_else_a_401_naming_the_header(text: str) -> None:
    """Finding 1 of the review: a huge number was an OverflowError (500); '+', spaces, '_' parsed, so one request
    had several canonical strings. Signed correctly or not, anything but plain digits is refused by name."""
    with pytest.raises(Unauthorized) as caught:
        verify(_signed_with_timestamp_text(text))
    assert caught.value.field == TIMESTAMP_HEADER


def test_a_timestamp_more_than_60_seconds_ahead_is_refused_though_the_window_is_300() -> None:
    """Finding 9: a timestamp 300 s ahead gave a signature 600 s of life. Clocks drift by seconds, not minutes."""
    verify(signed(ts=TS + 60))
    with pytest.raises(Unauthorized, match="ahead") as caught:
        verify(signed(ts=TS + 61))
    assert caught.value.field == TIMESTAMP_HEADER
    verify(signed(ts=TS - 300))  # the past keeps the whole window


# -- the path and query as signed: one spelling, whatever the client and the host did to the escapes ---------------


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        # a space in a path: what Enrollio writes, what a client sends, what a host that decodes passes on
        (["/api/users/a b/skips", "/api/users/a%20b/skips"], "/api/users/a%20b/skips"),
        # non-ASCII: Azure re-escapes the decoded path (PathString), werkzeug's IRI decodes it
        (["/api/users/\u00e9/skips", "/api/users/%C3%A9/skips", "/api/users/%c3%a9/skips"], "/api/users/%C3%A9/skips"),
        # characters a path may hold unescaped (PathString leaves them; quote() escapes them)
        (["/api/users/a'b@c/skips", "/api/users/a%27b%40c/skips"], "/api/users/a%27b%40c/skips"),
        # a query as urlencode writes it, and as a host that decodes what it can passes it on
        (
            ["/api/threads/t/messages?user_id=a%2Bb%40x.com", "/api/threads/t/messages?user_id=a%2Bb@x.com"],
            "/api/threads/t/messages?user_id=a%2Bb%40x.com",
        ),
        (
            ["/api/t?user_id=%C3%A9", "/api/t?user_id=\u00e9", "/api/t?user_id=%c3%a9"],
            "/api/t?user_id=%C3%A9",
        ),
        # '+' in a query is a space (form encoding), so is %20
        (["/api/t?q=a+b", "/api/t?q=a%20b"], "/api/t?q=a%20b"),
        # no query, an empty query and empty parts are the same; a name without '=' has an empty value
        (["/api/send", "/api/send?", "/api/send?&"], "/api/send"),
        (["/api/t?a&b=", "/api/t?a=&&b="], "/api/t?a=&b="),
    ],
)
def test_every_spelling_of_a_target_has_one_canonical_form(spellings: list[str], canonical: str) -> None:
    """Review finding 4: the signature covered the URL as the host rebuilt it, and hosts rebuild it differently."""
    assert {canonical_target(s) for s in spellings} == {canonical}


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("/api/t?q=a%2Bb", "/api/t?q=a+b"),  # '+' and ' ' are different values
        ("/api/t?a=1&b=2", "/api/t?b=2&a=1"),  # the order is signed
        ("/api/t?a=1&a=2", "/api/t?a=1"),  # so is every repeat
        ("/api/t?a=b%26c", "/api/t?a=b&c"),  # an escaped '&' is data, not a separator
        ("/api/t?a=b%3Dc", "/api/t?a%3Db=c"),
        ("/api/users/A/skips", "/api/users/a/skips"),  # case is kept
    ],
)
def test_targets_that_mean_different_things_stay_different(one: str, other: str) -> None:
    assert canonical_target(one) != canonical_target(other)


@pytest.mark.parametrize(
    ("signed_as", "received_as"),
    [
        # the repository's client signs what urlencode writes; Azure passes the query raw and the path re-escaped
        ("/api/threads/t/messages?user_id=a%2Bb%40x.com", "/api/threads/t/messages?user_id=a%2Bb%40x.com"),
        ("/api/threads/t/messages?user_id=%C3%A9", "/api/threads/t/messages?user_id=%C3%A9"),
        ("/api/users/a b/skips", "/api/users/a%20b/skips"),
        ("/api/users/a%27b/skips", "/api/users/a'b/skips"),
        ("/api/users/\u00e9/skips", "/api/users/%C3%A9/skips"),
    ],
)
def test_a_request_signed_with_one_spelling_verifies_with_another(signed_as: str, received_as: str) -> None:
    headers = sign_request(SECRET, TS, "GET", signed_as, b"", nonce=NONCE)
    verify_request(SECRET, headers, "GET", received_as, b"", NOW, window_seconds=300)


def test_canonical_target_never_raises_on_what_a_host_might_pass() -> None:
    for target in ("/api/%ff%fe", "/api/\ud800", "/api/t?%=%zz&\udfff=1", "/api/%", "?", ""):
        assert isinstance(canonical_target(target), str)
