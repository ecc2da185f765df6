"""The independent review of issue 12's defences, one test per finding, through the local host as Enrollio, Graph,
a browser or a stranger would call it: what the caller sees (status, the field named, headers) and what storage
holds afterwards."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.integration.conftest import Stack


def raw_request(
    stack: Stack, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """A request sent byte for byte as given (``requests`` would normalise the target and some headers)."""
    base = urlsplit(stack.enrollio.base_url)
    connection = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# -- 1: a timestamp no clock can hold is a 401, not a 500 -----------------------------------------------------------


def test_1_an_oversized_or_oddly_spelled_timestamp_is_a_401_naming_the_header(stack: Stack) -> None:
    for timestamp in ("1" + "0" * 400, "+1795694400", "1_795_694_400"):
        headers = [
            ("X-Enrollio-Timestamp", timestamp),
            ("X-Enrollio-Nonce", "a" * 16),
            ("X-Enrollio-Signature", "v2=" + "0" * 64),
        ]
        status, response_headers, body = raw_request(stack, "GET", "/api/users/u-1/skips", headers)
        assert status == 401, (timestamp[:12], status, body[:200])
        assert response_headers["x-content-type-options"] == "nosniff"
        assert b'"field": "X-Enrollio-Timestamp"' in body
