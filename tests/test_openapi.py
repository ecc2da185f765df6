"""The OpenAPI document is valid with every reference resolved, and describes each operation fully."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema
from openapi_spec_validator import validate

from sync_core.openapi import document

BASE = "urn:enrollio-outlook-sync:openapi"


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())


def test_every_reference_resolves_from_the_document_root() -> None:
    """openapi-spec-validator accepts a $ref that points nowhere (it does not follow schema refs): resolve each."""
    doc = json.loads(json.dumps(document()))  # as served
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    resolver = referencing.Registry().with_resource(BASE, resource).resolver(base_uri=BASE)
    found = sorted(set(references(doc)))
    assert found, "the document has references to check"
    unresolvable = []
    for ref in found:
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            unresolvable.append(ref)
    assert unresolvable == []
    assert all(ref.startswith("#/components/schemas/") for ref in found)
    assert "$defs" not in json.dumps(doc)


def test_the_reference_check_catches_a_dangling_reference() -> None:
    doc = document()
    doc["paths"]["/api/send"]["post"]["requestBody"]["content"]["application/json"]["schema"] = {"$ref": "#/$defs/X"}
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    resolver = referencing.Registry().with_resource(BASE, resource).resolver(base_uri=BASE)
    try:
        resolver.lookup("#/$defs/X")
    except referencing.exceptions.Unresolvable:
        return
    raise AssertionError("a dangling reference resolved")


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_has_a_unique_operation_id_and_typed_answers() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids)) == len(list(operations()))
    for path, method, op in operations():
        ok = [code for code in op["responses"] if code[0] in "23"]  # a browser route answers 302
        assert ok, (path, method)
        for code in ok:
            content = op["responses"][code].get("content", {})
            for media in content.values():
                assert media["schema"] != {"type": "object"} or path == "/api/openapi.json", (path, method, code)


def test_signed_operations_document_401_and_every_json_error_uses_the_error_schema() -> None:
    for path, method, op in operations():
        if op["security"]:
            assert "401" in op["responses"], (path, method)
        for code, answer in op["responses"].items():
            json_body = answer.get("content", {}).get("application/json")
            if code[0] in "45" and json_body and path != "/api/health":
                assert json_body["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, code)


def test_the_webhook_and_callback_bodies_are_described() -> None:
    paths = document()["paths"]
    for route in ("/api/graph/notifications", "/api/graph/lifecycle"):
        schema = paths[route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ChangeNotificationCollection"}
    form = paths["/api/outlook/callback"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert form["schema"] == {"$ref": "#/components/schemas/CallbackForm"}
    notification = document()["components"]["schemas"]["ChangeNotification"]
    assert "pattern" in notification["properties"]["subscriptionId"]  # the GUID rule is documented


# -- The webhooks: the events Enrollio receives ---------------------------------------------------------------


def _sample_events() -> list[Any]:
    """One event of each type, built as the service builds them (sync_core.events)."""
    import datetime as dt

    from sync_core import events
    from sync_core.connections import Connection, Status

    at = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    connection = Connection(
        user_id="u-1", account_id="a-1", connection_id="c-1", address="pat@school.example", tenant_id="t",
        user_object_id="o", home_account_id="h", status=Status.CONNECTED, active=True, connected_at=at, updated_at=at,
    )  # fmt: skip
    lost = dataclasses.replace(connection, status=Status.NEEDS_RECONNECT, status_reason="invalid_grant: AADSTS50173")
    gone = dataclasses.replace(connection, status=Status.DISCONNECTED, active=False)
    over = ({"name": "recital.mp4", "cap": 3145728, "graph_size": 4200000, "measured_at_least": 3145729},)
    sent = {"thread_id": "th-1", "internet_message_id": "<m1@school.example>"}
    return [
        events.message_synced(connection, "th-1", "<m2@home.example>", "inbound", [1200, 34], at),
        events.message_skipped(connection, "th-1", "<m3@home.example>", "inbound", "attachment_too_large", over, at),
        events.message_sent("u-1", "a-1", "c-1", sent, "idem-row", "key-1", at),
        events.connection_changed(None, connection),
        events.connection_changed(connection, lost),
        events.connection_changed(lost, gone),
    ]


def _bound(schema: dict[str, Any], registry: Any) -> Any:
    from jsonschema import Draft202012Validator

    # Relative references ("#/components/...") resolve against the document: the schema is read as if it were in it.
    return Draft202012Validator(schema, registry=registry, _resolver=registry.resolver(base_uri=BASE))


def test_every_event_type_is_a_webhook_whose_schema_accepts_the_events_the_service_sends() -> None:
    from sync_core.events import EventType

    hooks = document()["webhooks"]
    assert set(hooks) == {kind.value for kind in EventType}
    samples = _sample_events()
    assert sorted(e.type.value for e in samples) == sorted(hooks)
    for event in samples:
        operation = hooks[event.type.value]["post"]
        assert [p["name"] for p in operation["parameters"]] == ["webhook-id", "webhook-timestamp", "webhook-signature"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body = json.loads(event.body())
        errors = [e.message for e in _bound(schema, _registry()).iter_errors(body)]
        assert errors == [], (event.type, errors)
        # And the schema is no rubber stamp: another type's event, or a payload missing an id, is refused.
        other = next(e for e in samples if e.type != event.type)
        assert list(_bound(schema, _registry()).iter_errors(json.loads(other.body())))
        body["data"].pop("connection_id")
        assert list(_bound(schema, _registry()).iter_errors(body))


def _registry() -> Any:
    doc = json.loads(json.dumps(document()))
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    return referencing.Registry().with_resource(BASE, resource)


def test_no_event_payload_can_carry_an_address_subject_or_body() -> None:
    """Events are ids, reason codes and sizes: Enrollio reads the rest through the read API."""
    text = json.dumps([json.loads(e.body()) for e in _sample_events()])
    assert "pat@school.example" not in text and "recital.mp4" not in text and "AADSTS" not in text
    schemas = document()["components"]["schemas"]
    for name in ("MessageSyncedData", "MessageSkippedData", "MessageSentData", "ConnectionData", "OverCap"):
        fields = set(schemas[name]["properties"])
        assert not fields & {"address", "subject", "body", "html", "text", "name", "from", "to"}, name
