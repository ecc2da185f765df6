"""A function app with one trigger of each kind and no side effects: for the clean-stop test."""

from __future__ import annotations

import threading

import azure.functions as func

QUEUE = "fixture-quiet"

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ticked = threading.Event()


@app.route(route="ping")
def quiet_http(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


# "Storage" resolves to AzureWebJobsStorage, as the host resolves connection names.
@app.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="Storage")
def quiet_queue(msg: func.QueueMessage) -> None:
    return None


@app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *")
def quiet_timer(timer: func.TimerRequest) -> None:
    ticked.set()
