"""One token refresh at a time per connection (issue 11): refresh tokens rotate (the emulator kills a used one, as
CONTRACT.md section 9's client must expect), so two workers refreshing with the same one at once lose the grant;
and each refresh rewrites the connection's token cache, where the last write would win."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import msal
import requests

from devtools.emulator.notifier import DeliveryFaults
from sync_core import names
from sync_core.adapters.identity import SCOPES, ConnectionTokens, Identity, http_session
from sync_core.connections import Status
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_inbound import CONTACT, start_thread, thread

TOKEN_ROUTE = "POST /{tenant}/oauth2/v2.0/token"


def token_requests(stack: Stack, since: float) -> list[int]:
    """The statuses of the identity platform's token requests since ``since`` (Unix seconds)."""
    return [e.status for e in stack.emulator.log.snapshot() if e.route == TOKEN_ROUTE and e.at >= since]


def replies_without_notifications(stack: Stack, mailbox: str, sent: dict[str, Any], count: int) -> list[Any]:
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {"from": CONTACT, "subject": "RE: Trial class on Monday", "in_reply_to": sent["internet_message_id"]}
        replies = [
            stack.mail_world("POST", f"mail/{mailbox}/deliver", {**spec, "body_text": f"#{i}"}) for i in range(count)
        ]
        stack.flush()
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())
    return replies


def test_workers_meeting_an_expired_token_together_refresh_it_once_and_the_connection_stays_connected(
    stack: Stack, user_id: str
) -> None:
    mailbox = stack.new_mailbox("refresh.together")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    replies = replies_without_notifications(stack, mailbox, sent, 8)
    [connection] = stack.services.connections.for_user(user_id)
    # The access token in the cache still looks valid to MSAL, but Graph refuses it: every worker gets a 401.
    stack.emulator.identity.expire_access_tokens(stack.world.mailbox(mailbox).id)  # type: ignore[union-attr]
    since = time.time()
    queue = stack.services.storage.queue(names.QUEUE_INBOUND)
    for reply in replies:  # one queue message each: the host runs them at once
        ref = {"user_id": user_id, "connection_id": connection.connection_id, "message_id": reply["id"]}
        queue.send_message(json.dumps({"refs": [ref]}))
    wait_until(
        lambda: len(thread(stack, user_id, sent["thread_id"])["messages"]) == 9,
        what="the eight replies",
        timeout=60,
    )
    stack.settle()
    current = stack.services.connections.get(user_id, connection.connection_id)
    assert current is not None and current.status.value == "connected", current
    assert token_requests(stack, since) == [200]  # one refresh, and no refresh token was used twice


def test_a_refresh_waits_for_another_instances_refresh_and_uses_the_token_it_left(stack: Stack, user_id: str) -> None:
    """The lease is held here as another instance would hold it; that instance's refresh is written under it."""
    mailbox = stack.new_mailbox("refresh.wait")
    stack.connect(user_id, mailbox)
    [connection] = stack.services.connections.for_user(user_id)
    caches = stack.services.token_caches
    stack.emulator.identity.expire_access_tokens(stack.world.mailbox(mailbox).id)  # type: ignore[union-attr]
    since = time.time()
    got: list[str] = []
    with caches.refresh_lock(connection.connection_id) as lease:  # "the other instance" starts refreshing
        tokens = ConnectionTokens(stack.services.identity, caches, connection.connection_id, connection.home_account_id)
        waiting = threading.Thread(target=lambda: got.append(tokens(force_refresh=True)))
        waiting.start()
        time.sleep(1.0)
        assert got == [] and token_requests(stack, since) == []  # it waits, and asks nobody meanwhile
        cache = msal.SerializableTokenCache()
        cache.deserialize(caches.load(connection.connection_id))
        app = stack.services.identity.app(cache)
        [account] = app.get_accounts()
        theirs = app.acquire_token_silent_with_error(list(SCOPES), account, force_refresh=True)
        caches.save(connection.connection_id, cache.serialize(), lease=lease)
    waiting.join(timeout=30)
    assert got == [theirs["access_token"]]  # the other instance's fresh token, read from the cache
    assert token_requests(stack, since) == [200]  # that instance's refresh only


class SlowTokenAnswers:
    """MSAL's HTTP client with the identity platform's token answers arriving ``delay`` seconds late (the refresh
    is carried out at once: the refresh token it used is spent, the rotated one is in the late answer)."""

    def __init__(self, session: requests.Session, delay: float) -> None:
        self._session = session
        self._delay = delay

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        response = self._session.post(url, **kwargs)
        if url.endswith("/oauth2/v2.0/token"):
            time.sleep(self._delay)
        return response

    def close(self) -> None:
        self._session.close()


def test_a_refresh_answered_after_longer_than_blob_storages_shortest_lease_keeps_the_rotated_refresh_token(
    stack: Stack, user_id: str
) -> None:
    """The identity platform answers a refresh in 16 s, past a 15 s lease on the token cache: the rotated refresh
    token is still written (the old one is spent), so the next refresh works and the connection stays connected."""
    mailbox = stack.new_mailbox("refresh.slow")
    stack.connect(user_id, mailbox)
    [connection] = stack.services.connections.for_user(user_id)
    caches = stack.services.token_caches
    slow = Identity(stack.settings, SlowTokenAnswers(http_session(stack.settings.graph_ca_bundle), 16.0), timeout=30)
    tokens = ConnectionTokens(slow, caches, connection.connection_id, connection.home_account_id)
    signed_in = tokens()
    since = time.time()
    first = tokens(force_refresh=True)  # as after a 401: a refresh, answered late
    fast = ConnectionTokens(stack.services.identity, caches, connection.connection_id, connection.home_account_id)
    assert fast() == first  # the slow refresh's token is the one in the cache
    second = fast(force_refresh=True)  # with the refresh token the slow refresh left in the cache
    assert len({signed_in, first, second}) == 3
    assert token_requests(stack, since) == [200, 200]
    [after] = stack.services.connections.for_user(user_id)
    assert after.status is Status.CONNECTED
