"""Screening Graph's notifications: the handshake, what is accepted, what is dropped and why, packing."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from sync_core.results import BadRequest
from sync_core.subscriptions import Subscription
from sync_core.webhook import (
    MAX_ITEMS,
    MAX_PACKED_BYTES,
    MAX_SUBSCRIPTIONS,
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
# Subscription ids are GUIDs: the sample's "{subscription_guid}" placeholder stands for one (filled in below).
S1, NOPE, OLD, SAMPLE_ID = (str(uuid.UUID(int=n)) for n in (1, 2, 3, 4))
# A clientState as we issue them (new_client_state: 43 characters of base64url); the samples' "secretClientValue"
# placeholder stands for one.
STATE = "Qm9va3Mtb2YtdGhlLXNjaG9vbC1hbmQtc3R1ZGlvLTE"


MAILBOX = f"{TENANT}_622eaaff-0683-4862-9de4-f2ec83c2bd98"


def subscription(sid: str = SAMPLE_ID, state: str = STATE) -> Subscription:
    return Subscription(sid, MAILBOX, TENANT, state, "/users/x/messages", NOW + dt.timedelta(days=1))


def test_the_validation_token_is_echoed_as_given() -> None:
    answer = validation_answer({"validationToken": "Validation: Testing client application reachability <b>"})
    assert answer is not None
    assert (answer.status, answer.text) == (200, "Validation: Testing client application reachability <b>")
    assert validation_answer({}) is None


def sample(name: str) -> bytes:
    """A Graph sample with its subscription id placeholder filled in by a GUID, as Graph sends it."""
    raw = (SAMPLES / name).read_bytes()
    for placeholder in (b"{subscription_guid}", b"<subscription_guid>"):
        raw = raw.replace(placeholder, SAMPLE_ID.encode())
    for placeholder in (b"secretClientValue", b"<secretClientState>", b"{secret client state}"):
        raw = raw.replace(placeholder, STATE.encode())
    return raw


def test_the_documented_sample_is_accepted_and_referenced_by_resource_data_id() -> None:
    body = sample("change-notification-message-created.json")
    screened = screen_all(parse_collection(body).value, {SAMPLE_ID: subscription()}.get, NOW)
    assert not screened.rejected
    [(item, sub)] = screened.accepted
    # One reference for the mailbox, whichever users connected it: the worker decides for each (R1).
    assert message_ref(item, sub) == {
        "subscription_id": SAMPLE_ID,
        "mailbox": MAILBOX,
        "message_id": "{long_id_string}",
        "change_type": "created",
    }


@pytest.mark.parametrize(
    "name", ["change-notification-message-created.json", "lifecycle-missed.json", "lifecycle-subscription-removed.json"]
)
def test_the_samples_verbatim_placeholder_is_no_guid_and_is_refused_before_any_lookup(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_collection((SAMPLES / name).read_bytes())
    assert [f["field"] for f in caught.value.fields] == ["value.0.subscriptionId"]


@pytest.mark.parametrize(
    "name",
    [
        "change-notification-message-created.json",
        "lifecycle-missed.json",
        "lifecycle-subscription-removed.json",
        "lifecycle-reauthorization-required.json",
    ],
)
def test_every_graph_sample_passes_the_screening_caps(name: str) -> None:
    assert parse_collection(sample(name)).value


@pytest.mark.parametrize("bad", ["s1", "a/b", "{subscription_guid}", str(uuid.UUID(int=1)) + "x", ""])
def test_a_subscription_id_that_is_no_guid_is_a_400_naming_the_item(bad: str) -> None:
    body = json.dumps({"value": [{"subscriptionId": S1}, {"subscriptionId": bad}]}).encode()
    with pytest.raises(BadRequest) as caught:
        parse_collection(body)
    assert [f["field"] for f in caught.value.fields] == ["value.1.subscriptionId"]


def test_the_item_and_distinct_subscription_caps() -> None:
    def batch(ids: list[str]) -> bytes:
        return json.dumps({"value": [{"subscriptionId": i} for i in ids]}).encode()

    assert len(parse_collection(batch([S1] * MAX_ITEMS)).value) == MAX_ITEMS
    distinct = [str(uuid.UUID(int=n)) for n in range(MAX_SUBSCRIPTIONS)]
    assert len(parse_collection(batch(distinct)).value) == MAX_SUBSCRIPTIONS
    for too_many in (batch([S1] * (MAX_ITEMS + 1)), batch([*distinct, str(uuid.uuid4())])):
        with pytest.raises(PayloadTooLarge) as caught:
            parse_collection(too_many)
        assert caught.value.status == 413
        assert [f["field"] for f in caught.value.fields] == ["value"]
    # Case variants of one GUID are looked up as given, so each counts as distinct.
    variants = [S1.upper(), S1, S1[:-1] + S1[-1].upper()]
    assert len(parse_collection(batch(variants * 10)).value) == 30


def item(sid: str = S1, state: str | None = STATE, tenant: str | None = TENANT) -> ChangeNotification:
    return ChangeNotification(subscriptionId=sid, clientState=state, tenantId=tenant, changeType="created")


def test_spoofed_unknown_foreign_and_expired_items_are_dropped_with_reasons() -> None:
    known = {S1: subscription(S1), OLD: subscription(OLD)}
    known[OLD] = Subscription(OLD, MAILBOX, TENANT, STATE, "/r", NOW - dt.timedelta(seconds=1))
    lookups: list[str] = []

    def lookup(sid: str) -> Subscription | None:
        lookups.append(sid)
        return known.get(sid)

    items = [
        item(),
        item(state=STATE[::-1]),  # shaped like ours, but not this subscription's
        item(state=None),
        item(sid=NOPE),
        item(tenant="other"),
        item(sid=OLD),
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
    assert sorted(lookups) == sorted([NOPE, OLD, S1])  # one point read per distinct subscription


@pytest.mark.parametrize("state", [None, "", "guess", STATE[:-1], STATE + "x", STATE[:-1] + "=", STATE[:-1] + "\u00e9"])
def test_an_item_whose_client_state_we_could_not_have_issued_costs_no_read(state: str | None) -> None:
    """Review of i12, finding 5: such items were looked up (a storage read each, up to 100 per request)."""
    lookups: list[str] = []

    def lookup(sid: str) -> Subscription | None:
        lookups.append(sid)
        return subscription(sid)

    screened = screen_all([item(sid=str(uuid.UUID(int=n)), state=state) for n in range(100)], lookup, NOW)
    assert (screened.accepted, dict(screened.rejected), lookups) == ([], {"client_state_mismatch": 100}, [])


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


@pytest.mark.parametrize(
    ("oversized", "field"),
    [
        ({"resourceData": {"id": "m" * 1025}}, "value.0.resourceData.id"),
        ({"resource": "r" * 2049}, "value.0.resource"),
        ({"tenantId": "t" * 65}, "value.0.tenantId"),
        ({"changeType": "c" * 65}, "value.0.changeType"),
        ({"lifecycleEvent": "l" * 65}, "value.0.lifecycleEvent"),
        ({"subscriptionExpirationDateTime": "2" * 65}, "value.0.subscriptionExpirationDateTime"),
    ],
)
def test_every_field_of_an_item_is_bounded_so_an_accepted_item_fits_a_queue_message(
    oversized: dict[str, object], field: str
) -> None:
    """Review of i12, finding 6: unbounded fields made a queue message over 64 KiB (a 503, redelivered for hours)."""
    body = json.dumps({"value": [{"subscriptionId": S1, "clientState": STATE, **oversized}]}).encode()
    with pytest.raises(BadRequest) as caught:
        parse_collection(body)
    assert [f["field"] for f in caught.value.fields] == [field]
    longest = {
        "subscriptionId": S1,
        "clientState": STATE,
        "tenantId": "t" * 64,
        "changeType": "c" * 64,
        "resource": "r" * 2048,
        "resourceData": {"id": "m" * 1024},
    }
    [accepted] = parse_collection(json.dumps({"value": [longest]}).encode()).value
    ref = message_ref(accepted, subscription(S1))
    [packed] = pack([ref])
    assert len(packed) < MAX_PACKED_BYTES
