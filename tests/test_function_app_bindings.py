"""function_app as the Functions host indexes it, and the boundary: sync_core never imports azure.functions."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from devtools.local_host import index_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    """The indexed functions by name; shared through ``index_app`` because get_functions() works once per app."""
    return {f.get_function_name(): f for f in index_app("function_app:app")}


def trigger(function: Any) -> dict[str, Any]:
    return dict(function.get_trigger().get_dict_repr())


def test_http_functions_default_to_function_keys() -> None:
    assert function_app.app.auth_level == func.AuthLevel.FUNCTION


def test_health_is_an_anonymous_get_at_api_health(functions: dict[str, Any]) -> None:
    health = trigger(functions["health"])
    assert health["type"] == "httpTrigger"
    assert health["route"] == "health"
    assert [str(m.value) for m in health["methods"]] == ["GET"]
    assert health["authLevel"] == func.AuthLevel.ANONYMOUS


def test_every_http_route_is_unique(functions: dict[str, Any]) -> None:
    routes = [trigger(f)["route"].lower() for f in functions.values() if trigger(f)["type"] == "httpTrigger"]
    assert len(routes) == len(set(routes)), routes


def test_importing_function_app_needs_no_settings_and_does_no_io() -> None:
    # The host imports the module to index it before any setting may be valid; a fresh interpreter with none of
    # the app's settings must import and index it.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    done = subprocess.run(
        [sys.executable, "-c", "import function_app; print(len(function_app.app.get_functions()))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1


def imports_of(source: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, including ``from azure import functions``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_azure_functions(source: str) -> bool:
    return any(name == "azure.functions" or name.startswith("azure.functions.") for name in imports_of(source))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import azure.functions as func", True),
        ("from azure import functions", True),
        ("from azure.functions import HttpRequest", True),
        ("def f():\n    import azure.functions.decorators\n", True),
        ("import azure.storage.queue\nfrom azure.core import exceptions", False),
    ],
)
def test_the_import_check_sees_every_import_form(source: str, expected: bool) -> None:
    assert imports_azure_functions(source) is expected


def test_sync_core_never_imports_azure_functions() -> None:
    files = sorted((ROOT / "sync_core").rglob("*.py"))
    assert files, "sync_core has no modules?"
    offenders = [str(p.relative_to(ROOT)) for p in files if imports_azure_functions(p.read_text(encoding="utf-8"))]
    assert offenders == []


def _http_routes(functions: dict[str, Any]) -> dict[str, tuple[set[str], Any]]:
    routes = {}
    for function in functions.values():
        t = trigger(function)
        if t["type"] == "httpTrigger":
            path = "/api/" + t["route"].replace(":int}", "}")
            routes[path] = ({str(m.value).lower() for m in t["methods"]}, t.get("authLevel"))
    return routes


def test_every_http_route_is_in_the_openapi_document_and_nothing_else(functions: dict[str, Any]) -> None:
    from sync_core.openapi import document

    documented = {path: set(ops) for path, ops in document()["paths"].items()}
    served = {path: methods for path, (methods, _) in _http_routes(functions).items()}
    assert served == documented


def test_only_browser_graph_and_health_routes_are_anonymous(functions: dict[str, Any]) -> None:
    anonymous = {p for p, (_, level) in _http_routes(functions).items() if level == func.AuthLevel.ANONYMOUS}
    assert anonymous == {
        "/api/health",
        "/api/openapi.json",
        "/api/outlook/connect",
        "/api/outlook/callback",
        "/api/graph/notifications",
        "/api/graph/lifecycle",
    }


def test_queue_triggers_cover_exactly_the_queues_and_poison_queues_of_the_data_model(functions: dict[str, Any]) -> None:
    from sync_core import names

    queues = [trigger(f)["queueName"] for f in functions.values() if trigger(f)["type"] == "queueTrigger"]
    assert sorted(queues) == sorted((*names.QUEUES, *names.POISON_QUEUES))
    assert {trigger(f)["connection"] for f in functions.values() if trigger(f)["type"] == "queueTrigger"} == {
        "AzureWebJobsStorage"
    }


def test_a_requeued_pack_gets_as_many_attempts_as_the_host_gives_any_queue_message() -> None:
    from sync_core.workers import MAX_ATTEMPTS, RETRY_DELAY_SECONDS

    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["maxDequeueCount"] == MAX_ATTEMPTS
    hours, minutes, seconds = (int(x) for x in queues["visibilityTimeout"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds == RETRY_DELAY_SECONDS
