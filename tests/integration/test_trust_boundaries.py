"""Issue 12, one test per finding of the attack on the local stack: replayed sends, unbounded webhooks, ids storage
refuses, oversized sends, malformed return URLs, hostile content types, the cookie checked too late, reusable
connect links and the handshake's headers. Each asserts what the caller sees and what storage holds afterwards."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests

import function_app
from sync_core import names
from sync_core.signing import sign_link
from tests.integration.conftest import RETURN_URL, Stack
from tests.storage_snapshot import changes, snapshot

# What a refused request could have written (the replay guard's own table aside: it records accepted signatures).
DATA_TABLES = (
    names.TABLE_CONNECTIONS,
    names.TABLE_SUBSCRIPTIONS,
    names.TABLE_THREADS,
    names.TABLE_IDEMPOTENCY,
    names.TABLE_OAUTH_FLOWS,
)


def email(user_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"id": "c-1", "email": "parent@home.example", "name": "Pat Parent"},
        "subject": "Trial class",
        "text": "See you on Monday.",
    }
    return {**body, **overrides}


def send(stack: Stack, body: dict[str, Any], key: str | None = None) -> requests.Response:
    return stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def outbound(stack: Stack, address: str) -> list[dict[str, Any]]:
    response = stack.control().get(f"{stack.emulator.base_url}/_emulator/mail/outbound", params={"mailbox": address})
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def fields_of(response: requests.Response) -> list[str]:
    return [f["field"] for f in response.json().get("fields", [])]


def connections(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    response = stack.enrollio.call("GET", f"/api/users/{user_id}/connections")
    assert response.status_code == 200, response.text
    return list(response.json()["connections"])


def webhook(stack: Stack, route: str, body: object) -> requests.Response:
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


# -- 1: a captured signed send cannot be replayed ----------------------------------------------------------------


def test_1_a_captured_signed_send_replayed_with_a_new_idempotency_key_or_the_same_one_sends_nothing(
    stack: Stack, user_id: str
) -> None:
    address = stack.new_mailbox("replay.send")
    stack.connect(user_id, address)
    first = send(stack, email(user_id), key="first-key")
    assert first.status_code == 200, first.text
    captured = dict(first.request.headers)
    url = f"{stack.enrollio.base_url}/api/send"
    with_other_key = requests.post(url, data=first.request.body, headers={**captured, "Idempotency-Key": "other"})
    assert with_other_key.status_code == 401, with_other_key.text
    assert "bad signature" in with_other_key.json()["message"]
    as_captured = requests.post(url, data=first.request.body, headers=captured)
    assert as_captured.status_code == 401, as_captured.text
    assert "already used" in as_captured.json()["message"]
    assert len(outbound(stack, address)) == 1  # one email went out, not three
    # A retry signed afresh with the same key is still answered from the first call, without sending.
    retried = send(stack, email(user_id), key="first-key")
    assert (retried.status_code, retried.json()) == (200, first.json())
    assert len(outbound(stack, address)) == 1


# -- 2: the webhooks are bounded before any storage call ---------------------------------------------------------


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_2_a_webhook_batch_over_the_item_or_subscription_cap_is_413_before_any_storage_read(
    stack: Stack, route: str, subscription_reads: list[str]
) -> None:
    many_items = {"value": [{"subscriptionId": str(uuid.UUID(int=1)), "clientState": "x"}] * 1001}
    many_subscriptions = {"value": [{"subscriptionId": str(uuid.uuid4()), "clientState": "x"} for _ in range(101)]}
    for body in (many_items, many_subscriptions):
        refused = webhook(stack, route, body)
        assert refused.status_code == 413, refused.text
        assert fields_of(refused) == ["value"]
    assert subscription_reads == []
    # What Graph sends (a handful of items, GUID ids, a clientState shaped like ours) is screened as before: one
    # read per distinct subscription.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    fine = webhook(stack, route, {"value": [{"subscriptionId": i, "clientState": "x" * 43} for i in ids * 2]})
    assert fine.status_code == 202, fine.text
    assert sorted(subscription_reads) == sorted(ids)


# -- 3: ids that storage would refuse are a 400 naming the field -------------------------------------------------


def test_3_ids_with_characters_azure_tables_forbid_are_a_400_naming_the_field(stack: Stack, user_id: str) -> None:
    before = snapshot(stack.services.storage, tables=DATA_TABLES)
    for route in ("notifications", "lifecycle"):
        refused = webhook(stack, route, {"value": [{"subscriptionId": "a/b", "clientState": "x"}]})
        assert (refused.status_code, fields_of(refused)) == (400, ["value.0.subscriptionId"]), refused.text
    callback = requests.post(
        f"{stack.enrollio.base_url}/api/outlook/callback", data={"state": "a/b", "code": "x"}, timeout=10
    )
    assert callback.status_code == 400, callback.text
    assert "state" in callback.text
    for bad in ("a/b", "a\\b", "a#b", "a?b", "a\x00b", "a\x1fb", "a\x7fb", "a\x9fb", "x" * 1025):
        disconnect = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": bad, "connection_id": "c"})
        assert (disconnect.status_code, fields_of(disconnect)) == (400, ["user_id"]), (bad, disconnect.text)
        other = stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": "u", "connection_id": bad})
        assert (other.status_code, fields_of(other)) == (400, ["connection_id"]), (bad, other.text)
    sent = send(stack, email("?"))
    assert (sent.status_code, fields_of(sent)) == (400, ["user_id"]), sent.text
    listed = stack.enrollio.call("GET", f"/api/users/{quote('a#b')}/connections")
    assert (listed.status_code, fields_of(listed)) == (400, ["user_id"]), listed.text
    assert changes(before, snapshot(stack.services.storage, tables=DATA_TABLES)) == {}


# -- 4: oversized send fields are a 400 naming the field ---------------------------------------------------------


def test_4_an_oversized_subject_recipient_list_or_contact_name_is_a_400_naming_it(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("oversized")
    stack.connect(user_id, address)
    cases = [
        ({"subject": "s" * 40_000}, "subject"),
        ({"cc": [f"p{i}@home.example" for i in range(3000)]}, "cc"),
        ({"contact": {"email": "parent@home.example", "name": "n" * 40_000}}, "contact.name"),
    ]
    for overrides, field in cases:
        refused = send(stack, email(user_id, **overrides))
        assert refused.status_code == 400, (field, refused.status_code, refused.text[:300])
        assert fields_of(refused) == [field]
    assert outbound(stack, address) == []


def test_4_recipients_within_the_count_are_sent_and_stored_whole_however_long_as_stored(
    stack: Stack, user_id: str
) -> None:
    """100 addresses fit the count; as stored (JSON, non-ASCII as \\uXXXX) 100 long non-ASCII ones are more than a
    table property holds: the message row keeps the whole list in the blob beside it (no row-sized 400 any more)."""
    address = stack.new_mailbox("stored.lists")
    stack.connect(user_id, address)
    longest_ascii = [f"{i:03d}" + "p" * 238 + "@home.example" for i in range(100)]  # 254 characters each
    sent = send(stack, email(user_id, to=longest_ascii, cc=longest_ascii))
    assert sent.status_code == 200, sent.text[:300]
    non_ascii = [f"{i:03d}" + "\u00e9" * 238 + "@home.example" for i in range(100)]
    for field in ("to", "cc"):
        stored = send(stack, email(user_id, **{field: non_ascii}))
        assert stored.status_code == 200, (field, stored.status_code, stored.text[:300])
        [message] = stack.enrollio.call(
            "GET", f"/api/threads/{stored.json()['thread_id']}/messages", params={"user_id": user_id}
        ).json()["messages"]
        assert message[field] == non_ascii
    assert len(outbound(stack, address)) == 3


# -- 5: malformed return URLs on a signed link are refused before anything starts --------------------------------


@pytest.mark.parametrize(
    "return_url",
    [
        "https://[app.enrollio.example/settings",  # urlsplit raises on it
        RETURN_URL + "\r\nSet-Cookie: session=attacker",  # CR/LF passed the allow-list
        RETURN_URL + "\x00",
        RETURN_URL + "?" + "x" * 3000,
        RETURN_URL + "/\U0001f600",  # it would go back out in a Location header: ASCII only
    ],
)
def test_5_a_malformed_return_url_is_a_400_and_no_sign_in_starts(stack: Stack, user_id: str, return_url: str) -> None:
    flows_before = snapshot(stack.services.storage, tables=(names.TABLE_OAUTH_FLOWS,))
    link = stack.enrollio.connect_link(user_id, return_url=return_url)
    refused = stack.browser().get(link, allow_redirects=False)
    assert refused.status_code == 400, refused.text
    assert "return_url" in refused.text
    assert snapshot(stack.services.storage, tables=(names.TABLE_OAUTH_FLOWS,)) == flows_before
    assert connections(stack, user_id) == []


# -- 6: attachment content types -------------------------------------------------------------------------------


def test_6_a_content_type_with_crlf_is_refused_at_send_and_downloads_never_echo_a_hostile_type(
    stack: Stack, user_id: str
) -> None:
    address = stack.new_mailbox("ctype")
    stack.connect(user_id, address)
    data = b"<script>alert(1)</script>"
    attachment = {"name": "page.html", "content_base64": base64.b64encode(data).decode()}
    refused = send(stack, email(user_id, attachments=[{**attachment, "content_type": "text/plain\r\nX-Evil: 1"}]))
    assert (refused.status_code, fields_of(refused)) == (400, ["attachments.0.content_type"]), refused.text
    sent = send(stack, email(user_id, attachments=[{**attachment, "content_type": "text/html"}]))
    assert sent.status_code == 200, sent.text
    thread_id = sent.json()["thread_id"]
    thread = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id}).json()
    download_path = thread["messages"][0]["attachments"][0]["download"]
    download = stack.enrollio.call("GET", download_path, params={"user_id": user_id})
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    # A stored type that is no media type (an inbound sender chose it) is served as opaque bytes, not a 500.
    table = stack.services.storage.tables.get_table_client(names.TABLE_MESSAGES)
    [row] = list(table.query_entities("PartitionKey eq @t", parameters={"t": thread_id}))
    stored = json.loads(row["Attachments"])
    stored[0]["content_type"] = "text/html\r\nSet-Cookie: a=b"
    table.update_entity({"PartitionKey": thread_id, "RowKey": row["RowKey"], "Attachments": json.dumps(stored)})
    hostile = stack.enrollio.call("GET", download_path, params={"user_id": user_id})
    assert hostile.status_code == 200
    assert hostile.headers["Content-Type"] == "application/octet-stream"
    assert hostile.headers["X-Content-Type-Options"] == "nosniff"
    assert hostile.content == data


# -- 7: the browser cookie is checked before the sign-in flow is spent -------------------------------------------


def test_7_a_callback_without_the_browser_cookie_does_not_spend_the_victims_sign_in(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("cookie")
    victims_browser = stack.browser()
    action, fields = stack.consent(stack.enrollio.connect_link(user_id, login_hint=address), victims_browser)
    stranger = requests.post(action, data={"state": fields["state"]}, allow_redirects=False, timeout=10)
    assert stranger.status_code == 400
    assert "browser where you started" in stranger.text
    finished = victims_browser.post(action, data=fields, allow_redirects=False)
    assert finished.status_code == 302, finished.text
    outcome = parse_qs(urlsplit(finished.headers["Location"]).query)
    assert outcome["outcome"] == ["connected"]


# -- 8: connect links are single use, short-lived and kept out of logs -------------------------------------------


def test_8_a_connect_link_works_once_and_its_replay_cannot_attach_another_mailbox(stack: Stack, user_id: str) -> None:
    owner, attacker = stack.new_mailbox("link.owner"), stack.new_mailbox("link.attacker")
    link = stack.enrollio.connect_link(user_id, login_hint=owner)
    assert stack.sign_in(link).status_code == 302
    replayed = stack.browser().get(link.replace(quote(owner), quote(attacker)), allow_redirects=False)
    assert replayed.status_code == 401  # login_hint is signed: a changed one is a forgery
    replayed = stack.browser().get(link, allow_redirects=False)
    assert replayed.status_code == 401, replayed.text
    assert "already used" in replayed.text
    assert [c["address"] for c in connections(stack, user_id)] == [owner]


def test_8_a_connect_link_living_longer_than_15_minutes_is_refused(stack: Stack, user_id: str) -> None:
    ten_years = stack.enrollio.connect_link(user_id, ttl=10 * 365 * 24 * 3600)
    refused = stack.browser().get(ten_years, allow_redirects=False)
    assert refused.status_code == 401
    assert "15 minutes" in refused.text
    just_inside = stack.enrollio.connect_link(user_id, ttl=15 * 60 - 5)
    assert stack.browser().get(just_inside, allow_redirects=False).status_code == 302


def test_8_the_link_signature_is_not_in_the_hosts_request_log(
    stack: Stack, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    params = {"user_id": user_id, "account_id": "acct-1", "return_url": RETURN_URL, "exp": str(int(time.time()) + 60)}
    signed = sign_link(stack.enrollio.secret, {**params, "nonce": uuid.uuid4().hex})
    with caplog.at_level(logging.INFO):
        response = stack.browser().get(
            f"{stack.enrollio.base_url}/api/outlook/connect?{urlencode(signed)}", allow_redirects=False
        )
    assert response.status_code == 302
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))  # the host only
    assert "/api/outlook/connect" in logged  # the request line is logged...
    assert signed["sig"] not in logged  # ...without the signature


# -- 9: the validation handshake ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_9_the_validation_handshake_echoes_the_token_as_text_plain_with_nosniff(stack: Stack, route: str) -> None:
    token = "Validation: Testing client application reachability <script>alert(1)</script>"
    answer = requests.post(
        f"{stack.enrollio.base_url}/api/graph/{route}",
        params={"validationToken": token},
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.text == token
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_every_response_carries_nosniff(stack: Stack, user_id: str) -> None:
    responses = [
        requests.get(f"{stack.enrollio.base_url}/api/openapi.json", timeout=10),
        stack.enrollio.call("GET", f"/api/users/{user_id}/skips"),
        stack.enrollio.call("GET", f"/api/users/{user_id}/skips", sign=False),  # 401
        stack.browser().get(f"{stack.enrollio.base_url}/api/outlook/connect", allow_redirects=False),  # a page
        webhook(stack, "notifications", {"value": []}),
    ]
    for response in responses:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.request.url
