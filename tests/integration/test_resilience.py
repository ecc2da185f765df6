"""Failures in the middle of upkeep, catch-up and workers: nothing is lost for good, nothing stale wins."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from sync_core import catchup as catchup_module
from sync_core import names
from sync_core.adapters.graph import GraphError, GraphUnavailable
from sync_core.adapters.ops_store import FailureStore
from sync_core.catchup import catch_up
from sync_core.catchup_queue import CatchupRequest
from sync_core.connections import Status
from sync_core.failures import Transient
from sync_core.inbound import sync_message
from sync_core.mailbox import mark_grant_lost
from sync_core.upkeep import RENEW, handle_lifecycle
from tests.integration.conftest import Stack, refusing

CONTACT = "parent@home.example"


def start_thread(stack: Stack, user_id: str, mailbox: str) -> dict[str, Any]:
    stack.connect(user_id, mailbox)
    body = {"user_id": user_id, "account_id": "a", "kind": "individual", "contact": {"email": CONTACT},
            "subject": "Resilience", "html": "<p>hi</p>"}  # fmt: skip
    return dict(
        stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": uuid.uuid4().hex}).json()
    )


def test_a_failed_re_creation_keeps_the_subscription_row_so_it_is_tried_again(stack: Stack, user_id: str) -> None:
    cid = stack.connect(user_id, stack.new_mailbox("recreate"))["connection_id"]
    [sub] = stack.services.subscriptions.for_connection(cid)
    connection = stack.services.connections.get(user_id, cid)
    assert connection is not None
    # Gone at Graph without a lifecycle event (the renewal's PATCH will answer 404).
    stack.services.graph_for(connection).request("DELETE", f"/subscriptions/{sub.subscription_id}")
    renewal = json.dumps({"subscription_id": sub.subscription_id, "event": RENEW})
    with refusing(), pytest.raises(Transient):  # the queue tries the event again
        handle_lifecycle(renewal, stack.services)
    assert [s.subscription_id for s in stack.services.subscriptions.for_connection(cid)] == [sub.subscription_id]
    retried = handle_lifecycle(renewal, stack.services)
    [new] = stack.services.subscriptions.for_connection(cid)
    assert retried.recreated == [new.subscription_id]
    assert stack.emulator.subscriptions.get(new.subscription_id) is not None


def test_catch_up_records_a_message_it_cannot_sync_and_goes_on(
    stack: Stack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtools.emulator.notifier import DeliveryFaults

    mailbox = stack.new_mailbox("catchup.bad")
    sent = start_thread(stack, user_id, mailbox)
    stack.settle()
    stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
    try:
        spec = {
            "from": CONTACT,
            "subject": "RE: Resilience",
            "in_reply_to": sent["internet_message_id"],
            "body_text": "x",
        }
        bad, good = (stack.mail_world("POST", f"mail/{mailbox}/deliver", spec) for _ in range(2))
        stack.flush()
    finally:
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults())

    def flaky(ref: Any, services: Any) -> Any:
        if ref.message_id == bad["id"]:
            raise GraphError(400, "ErrorInvalidRequest", "this one message cannot be read")
        return sync_message(ref, services)

    monkeypatch.setattr(catchup_module, "sync_message", flaky)
    connection = stack.services.connections.get(user_id, stack.services.connections.for_user(user_id)[0].connection_id)
    assert connection is not None
    request = CatchupRequest(
        user_id=user_id, connection_id=connection.connection_id, reason="t", requested_at=dt.datetime.now(dt.UTC)
    )
    tally = catch_up(request, stack.services)
    assert tally["failed"] == 1
    assert tally["stored"] >= 1
    view = stack.enrollio.call("GET", f"/api/threads/{sent['thread_id']}/messages", params={"user_id": user_id}).json()
    assert good["internetMessageId"] in [m["internet_message_id"] for m in view["messages"]]
    recorded = FailureStore(stack.services.storage.tables).recent(names.QUEUE_CATCHUP)
    assert any(bad["id"] in str(f["message"]) and "ErrorInvalidRequest" in str(f["error"]) for f in recorded)


def test_a_stale_grant_loss_does_not_undo_a_disconnect(stack: Stack, user_id: str) -> None:
    cid = stack.connect(user_id, stack.new_mailbox("stale"))["connection_id"]
    stale = stack.services.connections.get(user_id, cid)  # read by a long-running worker...
    assert stale is not None
    stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid})
    mark_grant_lost(stale, "invalid_grant", stack.services)  # ...which then finds its token gone
    current = stack.services.connections.get(user_id, cid)
    assert current is not None
    assert (current.status, current.syncs) == (Status.DISCONNECTED, False)


def test_a_failed_reconnect_of_a_disconnected_mailbox_keeps_no_tokens(stack: Stack, user_id: str) -> None:
    address = stack.new_mailbox("reconnect.fails")
    cid = stack.connect(user_id, address)["connection_id"]
    stack.enrollio.call("POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": cid})
    with refusing():
        stack.sign_in(stack.enrollio.connect_link(user_id, login_hint=address))
    assert stack.services.token_caches.raw(cid) is None
    current = stack.services.connections.get(user_id, cid)
    assert current is not None
    assert current.status is Status.DISCONNECTED


def test_a_pack_with_a_malformed_and_a_throttled_reference_is_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_core import workers

    marker = uuid.uuid4().hex

    def outcome(ref: Any, services: Any) -> Any:
        raise GraphUnavailable(429, "TooManyRequests", "slow down", 2.0)

    monkeypatch.setattr(workers, "sync_message", outcome)
    refs = [{"user_id": "u", "connection_id": marker}, {"user_id": "u", "connection_id": marker, "message_id": "t"}]
    report = workers.sync_pack(json.dumps({"refs": refs}), stack.services)
    # The throttled reference goes back to wait out its throttle (not as a try), not filed as malformed with its
    # neighbour.
    assert (report.retried, report.throttled) == (0, 1)
    assert report.throttled_for >= 2.0
    assert [r for r in report.recorded if "message_id" in r] == [report.recorded[0]]
    recorded = FailureStore(stack.services.storage.tables).recent(names.QUEUE_INBOUND)
    assert [f["error"] for f in recorded if marker in str(f["message"])] == report.recorded


def test_invalid_settings_are_a_503_and_never_echo_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.functions as func

    import function_app
    from sync_core.settings import get_settings

    secret = "s3cr3t-" + uuid.uuid4().hex
    for name in ("GRAPH_CLIENT_ID", "AzureWebJobsStorage", "PUBLIC_BASE_URL", "TOKEN_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRAPH_CLIENT_SECRET", secret)
    monkeypatch.setenv("ENROLLIO_SHARED_SECRET", secret)
    get_settings.cache_clear()
    function_app.services.cache_clear()
    try:
        with pytest.raises(function_app.SettingsError) as caught:
            function_app.services()
        assert secret not in str(caught.value)
        assert "GRAPH_CLIENT_ID" in str(caught.value)
        request = func.HttpRequest(method="POST", url="http://localhost/api/send", body=b"{}", headers={})
        response = function_app.send_email(request)
        assert response.status_code == 503
        assert secret not in response.get_body().decode()
    finally:
        get_settings.cache_clear()
        function_app.services.cache_clear()
