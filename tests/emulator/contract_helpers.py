"""Contract checks against Microsoft's own artefacts: documented sample payloads and the msgraph-sdk models.

``assert_same_shape(sample, actual)``: every key of the sample is in the actual payload with the same JSON type
(lists compared by their first element), recursively; the failure names the path (``$.value[0].sender``).
``sdk_leftovers(payload, model)``: what msgraph-sdk's model could not place (unknown keys, or values of the wrong
type, which kiota silently drops): empty means the payload round-trips through the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from kiota_abstractions.serialization import Parsable
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter

SAMPLES = Path(__file__).resolve().parents[1] / "graph_samples"  # tests/graph_samples, whatever the cwd


def sample(name: str) -> Any:
    """A documented Graph payload from ``tests/graph_samples`` (sources in its README)."""
    return json.loads((SAMPLES / name).read_text())


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def assert_same_shape(sample: Any, actual: Any, path: str = "$", nullable: Collection[str] = ()) -> None:
    """Fail, naming the path, unless ``actual`` has every key of ``sample`` with the same JSON type.

    ``nullable``: key names whose value may be null on one side and typed on the other (Graph properties that
    are null in one payload and set in another, e.g. ``contentId``; the docs' samples even write ``"null"``).
    """
    name = path.rsplit(".", 1)[-1]
    expected, got = json_type(sample), json_type(actual)
    if expected != got:
        if name in nullable and "null" in (expected, got):
            return
        raise AssertionError(f"{path}: sample has {expected} ({sample!r:.60}), emulator has {got} ({actual!r:.60})")
    if expected == "object":
        for key, value in sample.items():
            if key not in actual:
                raise AssertionError(f"{path}: key {key!r} is missing (emulator keys: {sorted(actual)})")
            assert_same_shape(value, actual[key], f"{path}.{key}", nullable)
    elif expected == "array" and sample:
        if not actual:
            raise AssertionError(f"{path}: sample has items, emulator's array is empty")
        assert_same_shape(sample[0], actual[0], f"{path}[0]", nullable)


def _unplaced(model: Any, path: str) -> list[str]:
    """Keys kiota left in ``additional_data`` (instance annotations like ``@odata.etag`` excepted), recursively."""
    out = [f"{path}.{k}" for k in getattr(model, "additional_data", None) or {} if not k.startswith("@odata.")]
    for attr, value in vars(model).items():
        if attr in {"additional_data", "backing_store"}:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, Parsable):
                out += _unplaced(item, f"{path}.{attr}" + (f"[{i}]" if isinstance(value, list) else ""))
    return out


def _dropped(original: Any, reserialised: Any, path: str) -> list[str]:
    """Non-null values of ``original`` that came back null or missing: kiota parses a wrong type as None."""
    out: list[str] = []
    if isinstance(original, dict) and isinstance(reserialised, dict):
        for key, value in original.items():
            if value is None:
                continue
            if reserialised.get(key) is None:
                out.append(f"{path}.{key}")
            else:
                out += _dropped(value, reserialised[key], f"{path}.{key}")
    elif isinstance(original, list) and isinstance(reserialised, list):
        for i, (a, b) in enumerate(zip(original, reserialised, strict=False)):
            out += _dropped(a, b, f"{path}[{i}]")
    return out


def sdk_leftovers(payload: dict[str, Any], model: type[Parsable]) -> list[str]:
    """Paths of ``payload`` that msgraph-sdk's ``model`` does not understand; [] when it round-trips."""
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(payload).encode())
    parsed = node.get_object_value(model)  # type: ignore[type-var]
    writer = JsonSerializationWriter()
    writer.write_object_value(None, parsed)
    reserialised = json.loads(writer.get_serialized_content())
    return _unplaced(parsed, "$") + _dropped(payload, reserialised, "$")
