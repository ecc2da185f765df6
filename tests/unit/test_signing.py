"""Enrollio request and connect-link signatures: what passes, and every way a forgery is refused."""

import datetime as dt

import pytest

from sync_core.signing import (
    LINK_SIGNATURE_PARAM,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Unauthorized,
    sign_link,
    sign_request,
    verify_link,
    verify_request,
)

SECRET = b"shared-secret-for-tests"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
TS = int(NOW.timestamp())
BODY = b'{"user_id":"u1"}'


def verify(headers: dict[str, str], method: str = "POST", path: str = "/api/send", body: bytes = BODY) -> None:
    verify_request(SECRET, headers, method, path, body, NOW, window_seconds=300)


def test_a_correctly_signed_request_passes() -> None:
    verify(sign_request(SECRET, TS, "POST", "/api/send", BODY))


def test_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in sign_request(SECRET, TS, "POST", "/api/send", BODY).items()}
    verify(headers)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered body", "bad signature"),
        ("other path", "bad signature"),
        ("other method", "bad signature"),
        ("wrong secret", "bad signature"),
        ("stale", "replay window"),
        ("future", "replay window"),
        ("missing", "missing"),
        ("not a number", "Unix seconds"),
        ("other scheme", "bad signature"),
    ],
)
def test_forged_requests_are_refused_with_a_reason(case: str, reason: str) -> None:
    headers = sign_request(SECRET, TS, "POST", "/api/send", BODY)
    method, path, body = "POST", "/api/send", BODY
    if case == "tampered body":
        body = b'{"user_id":"u2"}'
    elif case == "other path":
        path = "/api/users/u2/connections"
    elif case == "other method":
        method = "GET"
    elif case == "wrong secret":
        headers = sign_request(b"another secret", TS, "POST", "/api/send", BODY)
    elif case == "stale":
        headers = sign_request(SECRET, TS - 301, "POST", "/api/send", BODY)
    elif case == "future":
        headers = sign_request(SECRET, TS + 301, "POST", "/api/send", BODY)
    elif case == "missing":
        headers = {}
    elif case == "not a number":
        headers[TIMESTAMP_HEADER] = "yesterday"
    elif case == "other scheme":
        headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].replace("v1=", "v0=")
    with pytest.raises(Unauthorized, match=reason):
        verify(headers, method, path, body)


def link(**overrides: str) -> dict[str, str]:
    params = {"user_id": "u1", "account_id": "a1", "return_url": "https://app.enrollio.example/x", "exp": str(TS + 600)}
    return sign_link(SECRET, {**params, **overrides})


def test_a_signed_link_passes_until_it_expires() -> None:
    verify_link(SECRET, link(), NOW)
    with pytest.raises(Unauthorized, match="expired"):
        verify_link(SECRET, link(), NOW + dt.timedelta(seconds=601))


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
