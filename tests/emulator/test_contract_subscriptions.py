"""The emulator's subscription payloads against Microsoft's documented samples and msgraph-sdk's model.

Shapes: every key of a sample (``tests/graph_samples``) is in the emulator's payload with the same JSON type.
SDK: the emulator's subscription parses into ``msgraph.generated.models.Subscription`` leaving nothing behind
but what Microsoft's own sample leaves behind too (``notificationContentType``, which Graph sends and the v1.0
model lacks): the emulator invents no property Graph's model does not know.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from msgraph.generated.models.subscription import Subscription

from devtools.emulator import EmulatorServer
from sync_core.subscriptions import create_request, new_client_state
from tests.emulator.conftest import Graph
from tests.emulator.contract_helpers import assert_same_shape, sample, sdk_leftovers
from tests.emulator.test_subscriptions import Receiver, control, flush, receiver, subscribe

__all__ = ["receiver"]  # the webhook endpoint fixture, shared with test_subscriptions

CREATE_SAMPLE = "subscription-create-response.json"
RENEW_SAMPLE = "subscription-renew-response.json"
# Null in Graph's answers for basic notifications; the renew sample happens to show them as "".
NULLABLE = ("encryptionCertificate", "encryptionCertificateId")


@pytest.fixture
def created(graph: Graph, receiver: Receiver) -> dict[str, Any]:
    return subscribe(graph, receiver)


def test_create_response_has_the_documented_shape(created: dict[str, Any]) -> None:
    assert_same_shape(sample(CREATE_SAMPLE), created)


def test_renew_response_has_the_documented_shape(emu: EmulatorServer, graph: Graph, created: dict[str, Any]) -> None:
    later = (emu.subscriptions.now() + dt.timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    renewed = graph.call("PATCH", f"/subscriptions/{created['id']}", json={"expirationDateTime": later})
    assert renewed.status_code == 200, renewed.text
    assert_same_shape(sample(RENEW_SAMPLE), renewed.json(), nullable=NULLABLE)


def test_subscription_round_trips_through_the_sdk_model(graph: Graph, created: dict[str, Any]) -> None:
    documented = sdk_leftovers(sample(CREATE_SAMPLE), Subscription)
    assert documented == ["$.notificationContentType"]
    assert sdk_leftovers(created, Subscription) == documented
    assert sdk_leftovers(graph.get(f"/subscriptions/{created['id']}").json(), Subscription) == documented
    [listed] = graph.get("/subscriptions").json()["value"]
    assert sdk_leftovers(listed, Subscription) == documented


def test_change_notification_post_has_the_documented_shape(
    emu: EmulatorServer, graph: Graph, receiver: Receiver, created: dict[str, Any]
) -> None:
    graph.deliver()
    flush(emu)
    [body] = [h for h in receiver.hits if h.path == "/api/graph/notifications" and not h.query]
    posted = json.loads(body.body)
    assert_same_shape(sample("change-notification-message-created.json"), posted)
    # As in the sample, resource and @odata.id name the same message in different casing (CONTRACT.md 3.1).
    [item] = posted["value"]
    assert item["resource"].startswith("users/") and item["resourceData"]["@odata.id"].startswith("Users/")
    assert item["resource"].lower() == item["resourceData"]["@odata.id"].lower()


@pytest.mark.parametrize(
    ("event", "sample_name"),
    [
        ("missed", "lifecycle-missed.json"),
        ("reauthorizationRequired", "lifecycle-reauthorization-required.json"),
        ("subscriptionRemoved", "lifecycle-subscription-removed.json"),
    ],
)
def test_lifecycle_posts_have_the_documented_shape(
    emu: EmulatorServer, receiver: Receiver, created: dict[str, Any], event: str, sample_name: str
) -> None:
    assert control(emu, f"{created['id']}/lifecycle", {"event": event}).status_code == 202
    flush(emu)
    [posted] = [h for h in receiver.hits if h.path == "/api/graph/lifecycle" and not h.query]
    body = json.loads(posted.body)
    assert_same_shape(sample(sample_name), body)
    assert set(body["value"][0]) == set(sample(sample_name)["value"][0])  # nothing more than Graph sends


def test_documented_create_request_is_accepted(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    request = {**sample("subscription-create-request.json"), "notificationUrl": receiver.url()}
    assert sdk_leftovers(request, Subscription) == []

    answer = graph.post("/subscriptions", json=request)

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["resource"], body["changeType"], body["clientState"]) == (
        request["resource"],
        "created",
        "secretClientValue",
    )
    # The sample's 2016 expiry is under 45 minutes from now, so Graph raises it to 45 minutes (CONTRACT.md 1.1).
    assert body["expirationDateTime"] > emu.subscriptions.now().strftime("%Y-%m-%dT%H:%M:%S")


def test_the_apps_own_create_request_is_accepted(emu: EmulatorServer, graph: Graph, receiver: Receiver) -> None:
    request = create_request(graph.mailbox.id, receiver.url("/"), new_client_state(), emu.subscriptions.now())

    answer = graph.post("/subscriptions", json=request)

    assert answer.status_code == 201, answer.text
    assert sorted(h.path for h in receiver.validations()) == ["/api/graph/lifecycle", "/api/graph/notifications"]


def test_resource_is_echoed_without_its_leading_slash(graph: Graph, receiver: Receiver) -> None:
    # CONTRACT.md 1.1: resources may be written "/users/{id}/messages"; Graph's documented answers show
    # "users/{id}/messages" (C concepts/outlook-change-notifications-overview.md @0a75a47c, Example 1).
    created = subscribe(graph, receiver, resource=f"/users/{graph.mailbox.id}/messages")
    assert created["resource"] == f"users/{graph.mailbox.id}/messages"
    [listed] = graph.get("/subscriptions").json()["value"]
    assert listed["resource"] == f"users/{graph.mailbox.id}/messages"
