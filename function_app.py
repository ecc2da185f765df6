"""The Azure Functions entry point: the only module that imports ``azure.functions``.

Each function turns its trigger input into plain values, calls ``sync_core``, and turns the result into a
response. The host imports this module to index it, so nothing here does I/O or reads settings at import:
the ports are built on first use, once per process.
"""

from __future__ import annotations

import json
from functools import cache

import azure.functions as func
from pydantic import ValidationError

from sync_core import health
from sync_core.services import Services, default_services

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@cache
def services() -> Services:
    """The process's ports, built on first use; raises ``ValidationError`` while settings are incomplete."""
    return default_services()


@app.function_name("health")
@app.route(route="health", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
def get_health(req: func.HttpRequest) -> func.HttpResponse:
    """200 when storage, the identity platform and Graph are reachable; 503 naming what is not."""
    try:
        ports = services()
    except ValidationError as error:  # not cached: fixed settings are picked up by the next call
        report = health.settings_unavailable(error)
    else:
        report = health.run_checks(health.probes_for(ports.settings, ports.storage, ports.http))
    return func.HttpResponse(
        json.dumps(report.to_json()),
        status_code=report.http_status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )
