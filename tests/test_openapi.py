"""The OpenAPI document is valid with every reference resolved, and describes each operation fully."""

from __future__ import annotations

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
