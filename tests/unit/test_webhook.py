"""Screening Graph's notifications: the handshake, what is accepted, what is dropped and why, packing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from sync_core.results import BadRequest
from sync_core.subscriptions import Subscription
from sync_core.webhook import (
    MAX_PACKED_BYTES,
    ChangeNotification,
    PayloadTooLarge,
    message_ref,
    pack,
    parse_collection,
    screen_all,
    validation_answer,
)

SAMPLES = Path(__file__).resolve().parents[1] / "graph_samples"  # tests/graph_samples, whatever the cwd
NOW = dt.datetime(2016, 3, 18, 22, 0, tzinfo=dt.UTC)
TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"


def subscription(sid: str = "{subscription_guid}", state: str = "secretClientValue") -> Subscription:
    return Subscription(sid, "u1", "c1", TENANT, state, "/users/x/messages", NOW + dt.timedelta(days=1))


def test_the_validation_token_is_echoed_as_given() -> None:
    answer = validation_answer({"validationToken": "Validation: Testing client application reachability <b>"})
    assert answer is not None
    assert (answer.status, answer.text) == (200, "Validation: Testing client application reachability <b>")
    assert validation_answer({}) is None


def test_the_documented_sample_is_accepted_and_referenced_by_resource_data_id() -> None:
    body = (SAMPLES / "change-notification-message-created.json").read_bytes()
    screened = screen_all(parse_collection(body).value, {"{subscription_guid}": subscription()}.get, NOW)
    assert not screened.rejected
    [(item, sub)] = screened.accepted
    assert message_ref(item, sub) == {
        "subscription_id": "{subscription_guid}",
        "connection_id": "c1",
        "user_id": "u1",
        "message_id": "{long_id_string}",
        "change_type": "created",
    }


def item(sid: str = "s1", state: str | None = "state", tenant: str | None = TENANT) -> ChangeNotification:
    return ChangeNotification(subscriptionId=sid, clientState=state, tenantId=tenant, changeType="created")


def test_spoofed_unknown_foreign_and_expired_items_are_dropped_with_reasons() -> None:
    known = {"s1": subscription("s1", "state"), "old": subscription("old", "state")}
    known["old"] = Subscription("old", "u", "c", TENANT, "state", "/r", NOW - dt.timedelta(seconds=1))
    lookups: list[str] = []

    def lookup(sid: str) -> Subscription | None:
        lookups.append(sid)
        return known.get(sid)

    items = [
        item(),
        item(state="guess"),
        item(state=None),
        item(sid="nope"),
        item(tenant="other"),
        item(sid="old"),
        item(),
    ]
    screened = screen_all(items, lookup, NOW)
    assert len(screened.accepted) == 2
    assert screened.rejected == {
        "client_state_mismatch": 2,
        "unknown_subscription": 1,
        "tenant_mismatch": 1,
        "subscription_expired": 1,
    }
    assert sorted(lookups) == ["nope", "old", "s1"]  # one point read per distinct subscription


@pytest.mark.parametrize("body", [b"not json", b'{"value": "x"}', b'{"value": [{"clientState": "x"}]}'])
def test_malformed_bodies_are_a_400_naming_the_problem(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_collection(body)
    assert caught.value.fields


def test_an_oversized_body_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_collection(b" " * (4 * 1024 * 1024 + 1))


def test_a_thousand_references_pack_into_a_few_queue_messages_that_each_fit() -> None:
    refs = [
        {
            "subscription_id": "s" * 36,
            "connection_id": "c" * 32,
            "user_id": "u",
            "message_id": "m" * 150,
            "change_type": "created",
        }
        for _ in range(1000)
    ]
    messages = pack(refs)
    assert len(messages) < 10
    assert all(len(m) <= MAX_PACKED_BYTES + 20 for m in messages)
    assert sum(len(json.loads(m)["refs"]) for m in messages) == 1000
    assert pack([]) == []
