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
