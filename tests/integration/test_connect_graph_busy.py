"""Signing in again to a connected mailbox while Graph is briefly unavailable: the shared subscription is still
alive (issue 11), so the connection stays connected; the user is told to try again, nothing is marked."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sync_core.connections import Status
from tests.integration.conftest import Stack


def test_a_sign_in_again_while_graph_is_unavailable_leaves_the_connection_connected(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("busy.resign")
    cid = stack.connect(user_id, address)["connection_id"]
    stack.emulator.faults.configure(fail_paths={"/subscriptions/": {"status": 503, "method": "PATCH"}})
    try:
        response = stack.sign_in(stack.enrollio.connect_link(user_id, login_hint=address))
    finally:
        stack.emulator.faults.reset()
    answer = parse_qs(urlsplit(response.headers["Location"]).query)
    assert answer["outcome"] == ["error"] and answer["reason"] == ["subscription_failed"]
    after = stack.services.connections.get(user_id, cid)
    assert after is not None and after.status is Status.CONNECTED, after
