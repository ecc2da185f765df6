"""A function app with an output binding, which the local host refuses to load rather than ignore."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()


@app.route(route="enqueue", auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="out", queue_name="fixture-out", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set("hello")
    return func.HttpResponse("queued")
