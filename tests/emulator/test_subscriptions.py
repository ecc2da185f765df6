"""Graph subscriptions on the emulator, with a REAL local HTTP endpoint receiving handshakes and notifications.

The endpoint (``Receiver``) is a werkzeug server in a thread that records every request; how it answers the
validation handshake and notification POSTs is scripted per test. ``flush()`` waits until the emulator's
notifier has delivered (or given up on) everything queued, so no test polls or sleeps for deliveries.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devtools.emulator import EmulatorServer, Mailbox
from devtools.emulator.notifier import RetryPolicy
from devtools.emulator.subscriptions_model import format_datetime, parse_datetime
from devtools.stack import https_session
from tests.emulator.conftest import Graph

CLIENT_STATE = "a-secret-client-state-0123456789"


@dataclass
class Hit:
    path: str
    query: dict[str, str]
    raw_query: str
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint: records requests; answers handshakes per ``validation`` and POSTs per ``statuses``."""

    validation: str = "echo"  # echo | encoded | error | json | slow
    statuses: list[int] = field(default_factory=list)  # answers to notification POSTs, in order; then 202
    gate: threading.Event | None = None  # while set to an unset Event, notification POSTs wait on it
    arrived: threading.Event = field(default_factory=threading.Event)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str = "/api/graph/notifications") -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self._server.shutdown()
        self._server.server_close()

    def validations(self) -> list[Hit]:
        return [h for h in self.hits if "validationToken" in h.query]

    def posts(self, path: str = "/api/graph/notifications") -> list[list[dict[str, Any]]]:
        """The ``value`` arrays of the notification POSTs to ``path``, in arrival order."""
        return [json.loads(h.body)["value"] for h in self.hits if h.path == path and "validationToken" not in h.query]

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        hit = Hit(
            request.path,
            dict(request.args),
            request.query_string.decode(),
            request.content_type or "",
            request.get_data(),
        )
        with self._lock:
            self.hits.append(hit)
        return self._answer(request)(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if "validationToken" in request.args:
            token = request.args["validationToken"]
            if self.validation == "encoded":  # the classic bug: echoing the raw, still-encoded query value
                raw = request.query_string.decode().split("validationToken=", 1)[1].split("&", 1)[0]
                return Response(raw, mimetype="text/plain")
            if self.validation == "error":
                return Response("nope", status=500)
            if self.validation == "json":
                return Response(f'"{token}"', mimetype="application/json")
            if self.validation == "slow":
                time.sleep(1.0)
            return Response(token, mimetype="text/plain")
        self.arrived.set()
        if self.gate is not None:
            self.gate.wait(10)
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 202
        return Response(status=status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def quick_retries(emu: EmulatorServer) -> None:
    emu.subscriptions.notifier.retry = RetryPolicy(base_delay=0.01, max_delay=0.05, horizon=5.0)


def subscribe(graph: Graph, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    """POST /subscriptions for the whole mailbox (``created``), expiring in 3 days; 201 expected."""
    answer = graph.post("/subscriptions", json=request_body(graph, receiver, **fields))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def request_body(graph: Graph, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return {
        "changeType": "created",
        "notificationUrl": receiver.url(),
        "lifecycleNotificationUrl": receiver.url("/api/graph/lifecycle"),
        "resource": f"/users/{graph.mailbox.id}/messages",
        "expirationDateTime": format_datetime(graph.emu.subscriptions.now() + dt.timedelta(days=3)),
        "clientState": CLIENT_STATE,
        **fields,
    }


def flush(emu: EmulatorServer) -> None:
    answer = https_session(emu.ca_path).post(f"{emu.base_url}/_emulator/subscriptions/flush", json={"timeout": 10})
    assert answer.json() == {"idle": True}


def control(emu: EmulatorServer, path: str, body: dict[str, Any]) -> Any:
    return https_session(emu.ca_path).post(f"{emu.base_url}/_emulator/subscriptions/{path}", json=body)


def test_handshake_then_a_delivered_message_arrives_as_a_notification(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    created = subscribe(graph, receiver)

    # CONTRACT.md 2.1: both URLs validated, text/plain, a token that only survives URL-decoding intact.
    validations = receiver.validations()
    assert sorted(h.path for h in validations) == ["/api/graph/lifecycle", "/api/graph/notifications"]
    assert all(h.content_type.startswith("text/plain") and h.body == b"" for h in validations)
    assert all(" " in h.query["validationToken"] and "%20" in h.raw_query for h in validations)
    assert receiver.posts() == []

    message = graph.deliver(subject="Can Sam join the spring term?")
    flush(emu)

    [[item]] = receiver.posts()
    assert item["subscriptionId"] == created["id"]
    assert item["clientState"] == CLIENT_STATE
    assert item["changeType"] == "created"
    assert item["tenantId"] == emu.world.tenant_id
    assert item["subscriptionExpirationDateTime"] == created["expirationDateTime"]
    assert item["resourceData"]["id"] == message["id"]  # immutable: the subscription was made with the Prefer
    assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    notification_post = [h for h in receiver.hits if h.path == "/api/graph/notifications" and not h.query]
    assert notification_post[0].content_type.startswith("application/json")
    # What the app does next: GET the message by resourceData.id (CONTRACT.md 3.1).
    fetched = graph.get(f"/me/messages/{item['resourceData']['id']}")
    assert fetched.status_code == 200 and fetched.json()["subject"] == "Can Sam join the spring term?"
    recorded = emu.subscriptions.get(created["id"])
    assert recorded is not None and recorded.immutable_ids


def test_without_immutable_ids_notifications_carry_rest_ids(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    answer = graph.post("/subscriptions", json=request_body(graph, receiver), prefer=())
    assert answer.status_code == 201, answer.text
    message = graph.deliver()
    flush(emu)
    [[item]] = receiver.posts()
    assert item["resourceData"]["id"] == message["restId"] != message["id"]


def test_folder_subscription_ignores_other_folders(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    subscribe(graph, receiver, resource="me/mailFolders('Inbox')/messages")
    sent = graph.control(
        "POST",
        f"mail/{graph.mailbox.address}/send",
        json={"to": "parent@family.example", "subject": "From Outlook", "body_text": "hi"},
    )
    assert sent.status_code == 201, sent.text
    delivered = graph.deliver()
    flush(emu)
    assert [[i["resourceData"]["id"] for i in post] for post in receiver.posts()] == [[delivered["id"]]]


@pytest.mark.parametrize(
    ("validation", "reason"),
    [("error", "200 OK"), ("encoded", "URL-decoded"), ("json", "text/plain"), ("slow", "timed out")],
)
def test_failed_handshake_is_400_and_creates_nothing(
    emu: EmulatorServer, graph: Graph, receiver: Receiver, validation: str, reason: str
) -> None:
    emu.subscriptions.handshake_timeout = 0.3
    receiver.validation = validation

    answer = graph.post("/subscriptions", json=request_body(graph, receiver))

    assert answer.status_code == 400
    assert reason in answer.json()["error"]["message"]
    assert graph.get("/subscriptions").json()["value"] == []
    graph.deliver()
    flush(emu)
    assert receiver.posts() == []


def test_lifecycle_url_is_validated_too(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    answer = graph.post(
        "/subscriptions", json=request_body(graph, receiver, lifecycleNotificationUrl="http://127.0.0.1:1/unreachable")
    )
    assert answer.status_code == 400
    assert "unreachable" in answer.json()["error"]["message"]


def test_notification_url_must_be_https_except_on_loopback(graph: Graph, receiver: Receiver) -> None:
    answer = graph.post("/subscriptions", json=request_body(graph, receiver, notificationUrl="http://example.com/x"))
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("notificationUrl:")
    assert receiver.validations() == []


def test_duplicate_subscription_is_409(graph: Graph, receiver: Receiver) -> None:
    first = subscribe(graph, receiver)
    # The same resource written as /me/messages is the same combination.
    again = graph.post("/subscriptions", json=request_body(graph, receiver, resource="/me/messages"))
    assert again.status_code == 409
    assert again.json()["error"]["message"] == (
        f"Subscription Id {first['id']} already exists for the requested combination"
    )
    assert graph.post("/subscriptions", json=request_body(graph, receiver, changeType="updated")).status_code == 201


def test_client_state_is_at_most_128_characters(graph: Graph, receiver: Receiver) -> None:
    too_long = graph.post("/subscriptions", json=request_body(graph, receiver, clientState="x" * 129))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"].startswith("clientState:")
    assert subscribe(graph, receiver, clientState="x" * 128)["clientState"] == "x" * 128


def test_expiry_beyond_10080_minutes_fails_and_under_45_minutes_is_raised(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    now = emu.subscriptions.now()
    too_far = format_datetime(now + dt.timedelta(minutes=10_081))
    answer = graph.post("/subscriptions", json=request_body(graph, receiver, expirationDateTime=too_far))
    assert answer.status_code == 400
    assert "10080 minutes" in answer.json()["error"]["message"]

    soon = format_datetime(now + dt.timedelta(minutes=10))
    created = subscribe(graph, receiver, expirationDateTime=soon)
    expires = parse_datetime(created["expirationDateTime"], "expirationDateTime")
    assert now + dt.timedelta(minutes=45) <= expires <= emu.subscriptions.now() + dt.timedelta(minutes=45)


def test_renew_reauthorize_delete(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    created = subscribe(graph, receiver)
    path = f"/subscriptions/{created['id']}"
    later = format_datetime(emu.subscriptions.now() + dt.timedelta(days=6))

    renewed = graph.call("PATCH", path, json={"expirationDateTime": later})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expirationDateTime"] == later
    too_far = format_datetime(emu.subscriptions.now() + dt.timedelta(days=8))
    assert graph.call("PATCH", path, json={"expirationDateTime": too_far}).status_code == 400
    lifecycle = graph.call("PATCH", path, json={"lifecycleNotificationUrl": receiver.url("/other")})
    assert lifecycle.status_code == 400
    assert lifecycle.json()["error"]["message"].startswith("lifecycleNotificationUrl:")

    reauthorized = graph.post(f"{path}/reauthorize")
    assert reauthorized.status_code == 204
    assert graph.get(path).json()["expirationDateTime"] == later

    assert graph.call("DELETE", path).status_code == 204
    assert graph.get(path).status_code == 404
    assert graph.call("DELETE", path).status_code == 404
    graph.deliver()
    flush(emu)
    assert receiver.posts() == []


def test_expired_subscription_is_gone_unless_renewed_in_time(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    hour = format_datetime(emu.subscriptions.now() + dt.timedelta(hours=1))
    lapsing = subscribe(graph, receiver, expirationDateTime=hour)
    kept = subscribe(graph, receiver, changeType="created,updated", expirationDateTime=hour)
    assert control(emu, "clock", {"advance_seconds": 1800}).status_code == 200
    two_days = format_datetime(emu.subscriptions.now() + dt.timedelta(days=2))
    assert graph.call("PATCH", f"/subscriptions/{kept['id']}", json={"expirationDateTime": two_days}).ok

    control(emu, "clock", {"advance_seconds": 3600})

    assert graph.get(f"/subscriptions/{lapsing['id']}").status_code == 404
    assert [s["id"] for s in graph.get("/subscriptions").json()["value"]] == [kept["id"]]
    graph.deliver()
    flush(emu)
    assert [[i["subscriptionId"] for i in post] for post in receiver.posts()] == [[kept["id"]]]


def test_list_shows_only_this_apps_subscriptions_for_this_user(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    from tests.emulator.conftest import graph_for

    mine = subscribe(graph, receiver)
    other_app = graph_for(emu, graph.mailbox, client_id="another-app")
    theirs = subscribe(other_app, receiver)
    colleague = graph_for(emu, emu.world.add_mailbox("colleague@school.example"))
    subscribe(colleague, receiver)

    assert [s["id"] for s in graph.get("/subscriptions").json()["value"]] == [mine["id"]]
    assert graph.get(f"/subscriptions/{theirs['id']}").status_code == 404


def test_delegated_subscriptions_need_read_scope_and_own_mailbox(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    token = emu.identity.issue_token_for_tests(graph.mailbox.id, scopes=frozenset({"Mail.ReadWrite", "User.Read"}))
    write_only = Graph(emu, graph.mailbox, token, graph.session)
    # CONTRACT.md 1.2: ReadWrite alone is not enough to subscribe; ask for Mail.Read explicitly.
    assert write_only.post("/subscriptions", json=request_body(graph, receiver)).status_code == 403
    colleague: Mailbox = emu.world.add_mailbox("colleague@school.example")
    other = graph.post("/subscriptions", json=request_body(graph, receiver, resource=f"users/{colleague.id}/messages"))
    assert other.status_code == 403


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"changeType": "moved"}, "changeType"),
    ({"changeType": None}, "changeType"),
    ({"resource": "/me/events"}, "resource"),
    ({"resource": "/me/messages?$filter=isRead eq false"}, "resource"),
    ({"resource": None}, "resource"),
    ({"expirationDateTime": "tomorrow"}, "expirationDateTime"),
    ({"latestSupportedTlsVersion": "v2_0"}, "latestSupportedTlsVersion"),
    ({"notificationUrl": None}, "notificationUrl"),
    ({"clientState": 42}, "clientState"),
    ({"clientstate": "typo"}, "clientstate"),
    ({"includeResourceData": True}, "includeResourceData"),
]


def test_bad_fields_are_400_naming_the_field(graph: Graph, receiver: Receiver) -> None:
    for change, field_name in BAD_FIELDS:
        body = {k: v for k, v in request_body(graph, receiver, **change).items() if v is not None}
        answer = graph.post("/subscriptions", json=body)
        assert answer.status_code == 400, (change, answer.text)
        assert answer.json()["error"]["message"].startswith(f"{field_name}:"), (change, answer.text)
    assert receiver.validations() == []


def test_lifecycle_events_reach_the_lifecycle_url(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    created = subscribe(graph, receiver)

    for event in ("missed", "reauthorizationRequired"):
        answer = control(emu, f"{created['id']}/lifecycle", {"event": event})
        assert answer.status_code == 202 and answer.json() == {"queued": True}
    flush(emu)

    events = [item for post in receiver.posts("/api/graph/lifecycle") for item in post]
    assert [e["lifecycleEvent"] for e in events] == ["missed", "reauthorizationRequired"]
    assert {(e["subscriptionId"], e["clientState"], e["tenantId"]) for e in events} == {
        (created["id"], CLIENT_STATE, emu.world.tenant_id)
    }
    assert receiver.posts() == []


def test_reauthorization_required_pauses_notifications_until_reauthorized(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    created = subscribe(graph, receiver)
    control(emu, f"{created['id']}/lifecycle", {"event": "reauthorizationRequired"})
    graph.deliver(subject="lost while paused")  # CONTRACT.md 3.2: changes during the pause are lost
    assert graph.post(f"/subscriptions/{created['id']}/reauthorize").status_code == 204
    after = graph.deliver(subject="after reauthorize")
    flush(emu)
    assert [[i["resourceData"]["id"] for i in post] for post in receiver.posts()] == [[after["id"]]]


def test_subscription_removed_deletes_the_subscription(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    created = subscribe(graph, receiver)
    control(emu, f"{created['id']}/lifecycle", {"event": "subscriptionRemoved"})
    flush(emu)
    [[event]] = receiver.posts("/api/graph/lifecycle")
    assert event["lifecycleEvent"] == "subscriptionRemoved"
    assert graph.get(f"/subscriptions/{created['id']}").status_code == 404
    assert control(emu, f"{created['id']}/lifecycle", {"event": "missed"}).status_code == 404


def test_revoking_the_grant_asks_for_reauthorization(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    created = subscribe(graph, receiver)
    emu.identity.revoke(graph.mailbox.id)
    flush(emu)
    [[event]] = receiver.posts("/api/graph/lifecycle")
    assert (event["subscriptionId"], event["lifecycleEvent"]) == (created["id"], "reauthorizationRequired")


def test_pending_notifications_for_one_url_travel_in_one_post(
    emu: EmulatorServer, graph: Graph, receiver: Receiver
) -> None:
    subscribe(graph, receiver)
    receiver.gate = threading.Event()
    first = graph.deliver(subject="one")
    assert receiver.arrived.wait(10)  # the first POST is now held open by the endpoint
    rest = [graph.deliver(subject=s)["id"] for s in ("two", "three", "four")]  # queued meanwhile, not blocked
    receiver.gate.set()
    flush(emu)
    assert [[i["resourceData"]["id"] for i in post] for post in receiver.posts()] == [[first["id"]], rest]


@pytest.mark.usefixtures("quick_retries")
def test_non_2xx_answers_are_retried_until_delivered(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    subscribe(graph, receiver)
    receiver.statuses = [500, 503, 429]
    message = graph.deliver()
    flush(emu)
    posts = receiver.posts()
    assert len(posts) == 4
    assert {post[0]["id"] for post in posts} == {posts[0][0]["id"]}  # the same notification each time
    assert posts[-1][0]["resourceData"]["id"] == message["id"]
    assert emu.subscriptions.notifier.undeliverable == []


def test_delivery_is_given_up_after_the_retry_horizon(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    emu.subscriptions.notifier.retry = RetryPolicy(base_delay=0.01, max_delay=0.02, horizon=0.1)
    subscribe(graph, receiver)
    receiver.statuses = [500] * 1000
    message = graph.deliver()
    flush(emu)
    [gave_up] = emu.subscriptions.notifier.undeliverable
    assert gave_up.item["resourceData"]["id"] == message["id"]
    assert gave_up.last_error == "HTTP 500"
    assert len(receiver.posts()) == gave_up.attempts > 1


def test_drop_and_duplicate_faults(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    subscribe(graph, receiver)
    assert control(emu, "faults", {"drop_rate": 1.0}).status_code == 200
    graph.deliver(subject="dropped")
    flush(emu)
    assert receiver.posts() == []
    assert len(emu.subscriptions.notifier.dropped) == 1

    control(emu, "faults", {"duplicate_rate": 1.0, "seed": 7})
    message = graph.deliver(subject="twice")
    flush(emu)
    items = [item for post in receiver.posts() for item in post]
    assert [i["resourceData"]["id"] for i in items] == [message["id"], message["id"]]
    assert items[0]["id"] == items[1]["id"]


def test_reorder_fault_changes_delivery_order(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    subscribe(graph, receiver)
    control(emu, "faults", {"reorder_rate": 1.0, "seed": 3})
    receiver.gate = threading.Event()
    graph.deliver(subject="zero")
    assert receiver.arrived.wait(10)
    queued = [graph.deliver(subject=s)["id"] for s in ("one", "two", "three")]
    receiver.gate.set()
    flush(emu)
    second_post = [i["resourceData"]["id"] for i in receiver.posts()[1]]
    assert sorted(second_post) == sorted(queued) and second_post != queued


def test_bad_fault_settings_name_the_field(emu: EmulatorServer) -> None:
    answer = control(emu, "faults", {"drop_rate": 2})
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("drop_rate:")
    answer = control(emu, "clock", {"advance_seconds": "a day"})
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("advance_seconds:")
