"""The independent review of issue 12's defences, one test per finding, through the local host as Enrollio, Graph,
a browser or a stranger would call it: what the caller sees (status, the field named, headers) and what storage
holds afterwards."""

from __future__ import annotations

import base64
import http.client
import uuid
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

import function_app
from sync_core import names
from sync_core.adapters.identity import Identity
from sync_core.connect import BROWSER_COOKIE
from tests.integration.conftest import Stack
from tests.integration.test_inbound import deliver, start_thread, wait_for_messages
from tests.storage_snapshot import changes, snapshot


def fields_of(response: requests.Response) -> list[str]:
    return [f["field"] for f in response.json().get("fields", [])]


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


# -- 4: the signature holds whatever the client and the host do to the URL's escapes -------------------------------


@pytest.mark.parametrize("user_id", ["a+b@x.com", "\u00e9l\u00e8ve-1", "o'neil", "a b", "a&b=c;d"])
def test_4_ids_that_need_escaping_are_signed_and_verified_in_path_and_query(stack: Stack, user_id: str) -> None:
    """Enrollio's client signs what it sends; the host passes the URL on its own way (Azure: the path decoded and
    re-escaped, the query raw). Before the canonical form these were 401 'bad signature' for the repo's own client."""
    in_path = stack.enrollio.call("GET", f"/api/users/{quote(user_id, safe='')}/connections")
    assert in_path.status_code == 200, in_path.text
    assert in_path.json() == {"user_id": user_id, "connections": []}
    in_query = stack.enrollio.call("GET", "/api/threads/no-such-thread/messages", params={"user_id": user_id})
    assert in_query.status_code == 404, in_query.text  # past the signature: the thread is unknown
    assert fields_of(in_query) == ["thread_id"]


def test_4_a_user_whose_id_needs_escaping_reads_the_thread_enrollio_sent(stack: Stack) -> None:
    user_id = f"parent+\u00e9l\u00e8ve's {uuid.uuid4().hex[:6]}@home.example"
    address = stack.new_mailbox("escaped.ids")
    stack.connect(user_id, address)
    sent = stack.enrollio.call(
        "POST",
        "/api/send",
        body={
            "user_id": user_id,
            "account_id": "acct-1",
            "kind": "individual",
            "contact": {"email": "parent@home.example"},
            "subject": "Trial class",
            "text": "See you on Monday.",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert sent.status_code == 200, sent.text
    thread = stack.enrollio.call(
        "GET", f"/api/threads/{sent.json()['thread_id']}/messages", params={"user_id": user_id}
    )
    assert thread.status_code == 200, thread.text
    assert [m["subject"] for m in thread.json()["messages"]] == ["Trial class"]


# -- 2: the callback reads its one cookie whatever else the site set ----------------------------------------------


@pytest.mark.parametrize("cookie", ["a@b=c", "a(b)=1", "a/b=1", 'x="y'])
def test_2_a_cookie_header_python_cannot_parse_is_a_400_page_not_a_500(stack: Stack, cookie: str) -> None:
    status, headers, body = raw_request(
        stack,
        "POST",
        "/api/outlook/callback",
        [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")],
        b"state=no-such-state",
    )
    assert (status, headers["content-type"].split(";")[0]) == (400, "text/html"), body[:300]
    assert headers["x-content-type-options"] == "nosniff"
    assert b"field: state" in body


def test_2_a_sign_in_finishes_though_the_site_set_other_malformed_cookies(stack: Stack, user_id: str) -> None:
    """Enrollio's domain may carry other cookies; one SimpleCookie disliked hid ours ('Sign-in not started here')."""
    address = stack.new_mailbox("other.cookies")
    browser = stack.browser()
    action, fields = stack.consent(stack.enrollio.connect_link(user_id, login_hint=address), browser)
    ours = browser.cookies.get(BROWSER_COOKIE)
    assert ours
    finished = requests.post(
        action,
        data=fields,
        headers={"Cookie": f"theme=dark mode; tracking=a,b; {BROWSER_COOKIE}={ours}"},
        allow_redirects=False,
        verify=browser.verify,
        timeout=30,
    )
    assert finished.status_code == 302, finished.text
    assert parse_qs(urlsplit(finished.headers["Location"]).query)["outcome"] == ["connected"]


# -- 3: an unreachable identity platform neither spends the link nor answers 500 -----------------------------------


class _Unreachable(requests.Session):
    """What MSAL's session meets when the identity platform cannot be reached: the connection is refused."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raise requests.ConnectionError("[Errno 111] Connection refused")


def test_3_with_microsoft_sign_in_unreachable_the_link_answers_503_try_again_and_still_works_after(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = function_app.services()
    # A cold instance: MSAL has not fetched the authority's OpenID configuration yet, and cannot.
    monkeypatch.setattr(ports, "identity", Identity(ports.settings, _Unreachable()))
    link = stack.enrollio.connect_link(user_id)
    tables = (names.TABLE_SPENT_SIGNATURES, names.TABLE_OAUTH_FLOWS)
    before = snapshot(stack.services.storage, tables=tables)
    refused = stack.browser().get(link, allow_redirects=False)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Content-Type"].startswith("text/html")
    assert "try again" in refused.text
    assert "Set-Cookie" not in refused.headers
    assert changes(before, snapshot(stack.services.storage, tables=tables)) == {}  # the link is not spent
    monkeypatch.undo()  # Microsoft is back: the same link starts the sign-in
    started = stack.browser().get(link, allow_redirects=False)
    assert started.status_code == 302, started.text
    assert started.headers["Location"].startswith(stack.emulator.base_url)


# -- 5 and 6: a forged webhook item costs no storage read, and nothing in an item can outgrow a queue message ------


def _webhook(stack: Stack, route: str, body: object) -> requests.Response:
    return requests.post(f"{stack.enrollio.base_url}/api/graph/{route}", json=body, timeout=30)


@pytest.fixture
def subscription_reads(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Subscriptions point read the webhook functions make while the test runs."""
    ports = function_app.services()
    reads: list[str] = []
    original = ports.subscriptions.get

    def counted(subscription_id: str) -> Any:
        reads.append(subscription_id)
        return original(subscription_id)

    monkeypatch.setattr(ports.subscriptions, "get", counted)
    return reads


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_5_items_whose_client_state_we_could_not_have_issued_are_dropped_before_any_storage_read(
    stack: Stack, route: str, subscription_reads: list[str]
) -> None:
    """Our clientStates are 43 characters of A-Z a-z 0-9 _ - (token_urlsafe(32)): anything else is a forgery, so
    100 distinct subscriptions with no or any other clientState cost 100 reads before; none now."""
    forged = [
        {"subscriptionId": str(uuid.uuid4()), **state}
        for state in ({}, {"clientState": None}, {"clientState": "x"}, {"clientState": "x" * 42 + "!"})
        for _ in range(25)
    ]
    answer = _webhook(stack, route, {"value": forged})
    assert answer.status_code == 202, answer.text
    assert answer.json()["rejected"] == {"client_state_mismatch": 100}
    assert subscription_reads == []
    plausible = str(uuid.uuid4())  # shaped like ours: still looked up (once), then refused as unknown
    answer = _webhook(stack, route, {"value": [{"subscriptionId": plausible, "clientState": "x" * 43}] * 2})
    assert answer.json()["rejected"] == {"unknown_subscription": 2}
    assert subscription_reads == [plausible]


@pytest.mark.parametrize(
    ("route", "oversized", "field"),
    [
        ("notifications", {"resourceData": {"id": "m" * 100_000}}, "value.0.resourceData.id"),
        ("notifications", {"resource": "Users/u/Messages/" + "m" * 100_000}, "value.0.resource"),
        ("notifications", {"changeType": "created" * 10_000}, "value.0.changeType"),
        ("notifications", {"tenantId": "t" * 100_000}, "value.0.tenantId"),
        ("lifecycle", {"lifecycleEvent": "missed" * 20_000}, "value.0.lifecycleEvent"),
        ("lifecycle", {"subscriptionExpirationDateTime": "2" * 100_000}, "value.0.subscriptionExpirationDateTime"),
    ],
)
def test_6_an_item_with_an_oversized_field_is_a_400_naming_it_and_queues_nothing(
    stack: Stack, user_id: str, route: str, oversized: dict[str, Any], field: str
) -> None:
    """With the subscription's real clientState such an item was accepted, and its queue message (over 64 KiB) a
    503 'storage unavailable': Graph would have redelivered it for hours."""
    stack.connect(user_id, stack.new_mailbox("big.fields"))
    [connection] = stack.services.connections.for_user(user_id)
    [sub] = stack.services.subscriptions.for_connection(connection.connection_id)
    item = {
        "subscriptionId": sub.subscription_id,
        "clientState": sub.client_state,
        "tenantId": sub.tenant_id,
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "resourceData": {"id": "y"},
        **({"lifecycleEvent": "missed"} if route == "lifecycle" else {}),
    }
    before = snapshot(stack.services.storage, skip=(names.TABLE_CONNECTIONS,))
    answer = _webhook(stack, route, {"value": [{**item, **oversized}]})
    assert (answer.status_code, fields_of(answer)) == (400, [field]), answer.text[:300]
    assert changes(before, snapshot(stack.services.storage, skip=(names.TABLE_CONNECTIONS,))) == {}


# -- 7: an attachment index no int32 holds is a 404, as in Azure -------------------------------------------------


@pytest.mark.parametrize("index", ["9" * 5000, "2147483648", "-1"])
def test_7_an_attachment_index_out_of_int32_or_range_is_a_404(stack: Stack, index: str) -> None:
    answer = stack.enrollio.call("GET", f"/api/threads/t-1/messages/m-1/attachments/{index}", params={"user_id": "u"})
    assert answer.status_code == 404, answer.text[:300]


# -- 8: an attachment name no UTF-8 can hold still downloads -----------------------------------------------------


def test_8_a_reply_whose_attachment_name_holds_a_lone_surrogate_syncs_and_downloads(stack: Stack, user_id: str) -> None:
    """Graph's JSON may carry "\\ud800" in a name (JSON allows a lone surrogate, UTF-8 cannot encode it): the reply
    synced with the name as received, and every download of it was a 500 (the file name failed to encode)."""
    mailbox = stack.new_mailbox("surrogate")
    sent = start_thread(stack, user_id, mailbox)
    attachment = {"kind": "file", "name": "\ud800scan.pdf", "content_base64": base64.b64encode(b"%PDF-1.4").decode()}
    reply = deliver(
        stack, mailbox, subject="RE: Trial", in_reply_to=sent["internet_message_id"], attachments=[attachment]
    )
    messages = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    [synced] = [m for m in messages if m["internet_message_id"] == reply["internetMessageId"]]
    [stored] = synced["attachments"]
    assert stored["name"] == "\ud800scan.pdf"  # returned as stored (Enrollio escapes what it shows)
    download = stack.enrollio.call("GET", stored["download"], params={"user_id": user_id})
    assert download.status_code == 200, download.text[:300]
    assert download.headers["Content-Disposition"] == "attachment; filename*=UTF-8''%EF%BF%BDscan.pdf"
    assert download.content == b"%PDF-1.4"


# -- 9: an already-used signature says so by its code, so Enrollio knows to sign afresh and retry -----------------


def test_9_a_replayed_post_is_a_401_with_its_own_error_code(stack: Stack, user_id: str) -> None:
    first = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": "c-1"})
    assert first.status_code == 403, first.text  # past the signature: nobody's connection
    replayed = requests.post(first.request.url, data=first.request.body, headers=first.request.headers, timeout=30)
    assert replayed.status_code == 401, replayed.text
    assert replayed.json()["error"] == "signature_already_used"
    assert fields_of(replayed) == ["X-Enrollio-Signature"]
    forged = requests.post(
        first.request.url,
        data=first.request.body,
        headers={**first.request.headers, "X-Enrollio-Signature": "v2=" + "0" * 64},
        timeout=30,
    )
    assert (forged.status_code, forged.json()["error"]) == (401, "unauthorized")
