"""A function app for the local-host tests: every trigger kind, recording what it saw in an Azurite table.

Tests set ``AzureWebJobsStorage`` before the host starts and read the ``FixtureEvents`` table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from functools import cache

import azure.functions as func
from azure.data.tables import TableClient, TableServiceClient

EVENTS_TABLE = "FixtureEvents"
WORK_QUEUE = "fixture-work"
GATE_QUEUE = "fixture-gate"

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# The gate queue's functions block until a test opens the gate; the gauge counts how many run at once.
gate = threading.Event()
gauge_lock = threading.Lock()
gauge = {"running": 0, "most": 0}


@cache
def events() -> TableClient:
    service = TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])  # noqa: SIM112 (the Functions setting name)
    return service.create_table_if_not_exists(EVENTS_TABLE)


def record(kind: str, row: str, **properties: object) -> None:
    events().upsert_entity({"PartitionKey": kind, "RowKey": row, "at": dt.datetime.now(dt.UTC), **properties})


@app.route(route="items/{item_id}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "item_id": req.route_params.get("item_id"),
        "query": dict(req.params),
        "body": req.get_body().decode(),
        "trace": req.headers.get("x-trace"),
        "method": req.method,
    }
    headers = {"X-Echo": "yes"}
    return func.HttpResponse(json.dumps(payload), status_code=201, mimetype="application/json", headers=headers)


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@app.queue_trigger(arg_name="msg", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    text = msg.get_body().decode()
    record("work", f"{msg.id}-{msg.dequeue_count}", text=text, dequeue_count=msg.dequeue_count, message_id=msg.id)
    if text.startswith("fail"):
        raise RuntimeError(f"failing on purpose: {text}")


@app.queue_trigger(arg_name="msg", queue_name=GATE_QUEUE, connection="AzureWebJobsStorage")
def held(msg: func.QueueMessage) -> None:
    with gauge_lock:
        gauge["running"] += 1
        gauge["most"] = max(gauge["most"], gauge["running"])
    try:
        gate.wait(timeout=60)
        record("held", msg.id, text=msg.get_body().decode())
    finally:
        with gauge_lock:
            gauge["running"] -= 1


@app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *")
def tick(timer: func.TimerRequest) -> None:
    record("tick", dt.datetime.now(dt.UTC).isoformat(), past_due=timer.past_due)


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def yearly(timer: func.TimerRequest) -> None:
    record("yearly", dt.datetime.now(dt.UTC).isoformat(), past_due=timer.past_due)
