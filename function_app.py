"""The Azure Functions entry point: the only module that imports ``azure.functions``.

Each function turns its trigger input into plain values, calls ``sync_core``, and turns the result into a
response. The host imports this module to index it, so nothing here does I/O or reads settings at import:
the ports are built on first use, once per process.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable
from functools import cache
from urllib.parse import urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError
from pydantic import ValidationError

from sync_core import (
    catchup,
    connect,
    delivery,
    health,
    intake,
    names,
    openapi,
    read_api,
    replay,
    send,
    telemetry,
    upkeep,
    workers,
)
from sync_core.adapters.graph import GraphUnavailable
from sync_core.cookies import cookie_value
from sync_core.results import Binary, Page, PlainText, Problem, Redirect, Result, parse_body
from sync_core.services import Services, default_services
from sync_core.signing import IDEMPOTENCY_HEADER, Unauthorized

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
STORAGE = "AzureWebJobsStorage"  # the queue triggers' connection: a connection string or identity-based settings
log = logging.getLogger("sync_core.functions")  # under sync_core: exported with the app's telemetry


@cache
def services() -> Services:
    """The process's ports, built on first use; ``SettingsError`` while settings are incomplete (not cached, so
    fixed settings are picked up by the next call)."""
    try:
        ports = default_services()
    except ValidationError as error:
        raise SettingsError(error) from None
    telemetry.configure(ports.settings)  # exporting, once per process, on first use (never at import)
    return ports


class SettingsError(RuntimeError):
    """Settings that do not validate. Its message names each setting and why, never a value: pydantic's own
    message echoes the environment, secrets included, and the host logs exception messages."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(f"invalid settings: {health.describe_settings_error(error)}")
        self.validation_error = error


@app.function_name("health")
@app.route(route="health", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
def get_health(req: func.HttpRequest) -> func.HttpResponse:
    """200 when storage, the identity platform and Graph are reachable; 503 naming what is not."""
    try:
        ports = services()
    except SettingsError as error:
        report = health.settings_unavailable(error.validation_error)
    else:
        report = health.run_checks(health.probes_for(ports.settings, ports.storage, ports.http))
    return _json(report.http_status, report.to_json())


# ---------------------------------------------------------------------------------------------------------------
# The sync service: one mapping from use-case results to HTTP, then one thin function per trigger.
# ---------------------------------------------------------------------------------------------------------------


# On every response: no content sniffing (a body is only ever what its Content-Type says), and no caching of
# answers that carry a user's data.
_ALWAYS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
# Bytes or text a caller chose: nothing in them may run, even if a browser is talked into rendering them.
_INERT = {"Content-Security-Policy": "default-src 'none'; sandbox"}


def _response(
    body: str | bytes | None, status: int, mimetype: str | None, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    """Every HTTP response is built here."""
    return func.HttpResponse(body, status_code=status, mimetype=mimetype, headers={**_ALWAYS, **(headers or {})})


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return _response(json.dumps(body), status, "application/json", headers)


def _page(status: int, title: str, text: str) -> func.HttpResponse:
    body = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    return _response(body, status, "text/html", {"Content-Security-Policy": "default-src 'none'"})


def respond(result: Result) -> func.HttpResponse:
    """The one place where use-case results become HTTP responses."""
    if isinstance(result, Redirect):
        headers = {"Location": result.location}
        if result.set_cookie:
            headers["Set-Cookie"] = result.set_cookie
        return _response(None, 302, None, headers)
    if isinstance(result, Page):
        return _page(result.status, result.title, result.text)
    if isinstance(result, Binary):
        # The stored type when it is a well-formed media type, else opaque bytes; always a download.
        # Content-Type as a header, not a mimetype: the host would add a charset to bytes of any type.
        headers = {
            "Content-Type": result.safe_content_type,
            "Content-Disposition": result.content_disposition,
            **_INERT,
        }
        return _response(result.data, 200, None, headers)
    if isinstance(result, PlainText):
        # Graph's validation handshake: 200, text/plain, the decoded token (CONTRACT.md section 2.1).
        return _response(result.text, result.status, "text/plain", _INERT)
    return _json(result.status, result.body, result.headers or None)


def _failure(exc: Exception, browser: bool) -> func.HttpResponse:
    """Errors as a caller should see them: a status and a message naming what is wrong."""
    extra: dict[str, list[dict[str, str]]]
    if isinstance(exc, Unauthorized):
        status, message, extra = 401, exc.reason, {"fields": [{"field": exc.field}]}
        if not browser:
            return _json(status, {"error": exc.code, "message": message, **extra})
    elif isinstance(exc, Problem):
        status, message, extra = exc.status, exc.message, {"fields": exc.fields} if exc.fields else {}
        if exc.retry_after is not None and not browser:
            body = {"error": _ERROR_CODES.get(status, "error"), "message": message, **extra}
            return _json(status, body, {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
    elif isinstance(exc, GraphUnavailable):
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        body = {"error": "graph_unavailable", "message": f"Microsoft Graph is busy ({exc.code}); retry later"}
        return _json(503, body, {"Retry-After": retry_after})
    elif isinstance(exc, AzureError):
        log.exception("storage unavailable")
        return _json(
            503, {"error": "storage_unavailable", "message": "storage is unavailable; retry"}, {"Retry-After": "5"}
        )
    else:
        raise exc
    if browser:
        named = [str(f["field"]) for f in extra.get("fields", []) if "field" in f]
        return _page(status, "Outlook connection failed", message + (f" (field: {', '.join(named)})" if named else ""))
    return _json(status, {"error": _ERROR_CODES.get(status, "error"), "message": message, **extra})


_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    502: "graph_refused",
    503: "graph_unavailable",
}


def _path_and_query(req: func.HttpRequest) -> str:
    url = urlsplit(str(req.url))
    return url.path + (f"?{url.query}" if url.query else "")


def _check_signature(req: func.HttpRequest) -> None:
    replay.authenticate(dict(req.headers), req.method, _path_and_query(req), req.get_body(), services())


def _serve(
    req: func.HttpRequest, handler: Callable[[], Result], *, signed: bool = False, browser: bool = False
) -> func.HttpResponse:
    try:
        with telemetry.operation(f"{req.method} {urlsplit(str(req.url)).path}"):
            if signed:
                _check_signature(req)
            return respond(handler())
    except (Unauthorized, Problem, GraphUnavailable, AzureError) as exc:
        return _failure(exc, browser)
    except SettingsError as exc:
        log.error("%s", exc)
        return _json(503, {"error": "misconfigured", "message": "the service is not configured; see its logs"})


# -- Outlook connection (R1, R2, R3, R8) ------------------------------------------------------------------------


@app.function_name("outlook_connect")
@app.route(route="outlook/connect", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
def outlook_connect(req: func.HttpRequest) -> func.HttpResponse:
    """A signed link from Enrollio: start Microsoft sign-in (the link's HMAC is the authentication)."""
    return _serve(req, lambda: connect.start_connect(dict(req.params), services()), browser=True)


@app.function_name("outlook_callback")
@app.route(
    route="outlook/callback", methods=[func.HttpMethod.GET, func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS
)
def outlook_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Microsoft's answer after sign-in: a form POST (form_post), or a query on GET (errors before the flow).

    The single-use state is the authentication.
    """
    answer = dict(req.form.items()) if req.method == "POST" else dict(req.params)
    cookie = req.headers.get("Cookie")
    return _serve(
        req,
        lambda: connect.complete_connect(answer, services(), cookie_value(cookie, connect.BROWSER_COOKIE)),
        browser=True,
    )


@app.function_name("outlook_disconnect")
@app.route(route="outlook/disconnect", methods=[func.HttpMethod.POST])
def outlook_disconnect(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(
        req,
        lambda: connect.disconnect(
            parse_body(connect.DisconnectRequest, req.get_body(), "disconnect request"), services()
        ),
        signed=True,
    )


@app.function_name("user_connections")
@app.route(route="users/{user_id}/connections", methods=[func.HttpMethod.GET])
def user_connections(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(req, lambda: connect.list_connections(req.route_params["user_id"], services()), signed=True)


# -- Graph webhooks -----------------------------------------------------------------------------------------------


@app.function_name("graph_notifications")
@app.route(route="graph/notifications", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Graph's change notifications: handshake, screen, queue, 202 (clientState per item is the authentication)."""
    return _serve(req, lambda: intake.receive_notifications(dict(req.params), req.get_body(), services()))


@app.function_name("graph_lifecycle")
@app.route(route="graph/lifecycle", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS)
def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(req, lambda: intake.receive_lifecycle(dict(req.params), req.get_body(), services()))


# -- Send and read (Enrollio) -------------------------------------------------------------------------------------


@app.function_name("send_email")
@app.route(route="send", methods=[func.HttpMethod.POST])
def send_email(req: func.HttpRequest) -> func.HttpResponse:
    key = req.headers.get(IDEMPOTENCY_HEADER)
    return _serve(req, lambda: send.send(key, req.get_body(), services()), signed=True)


@app.function_name("thread_messages")
@app.route(route="threads/{thread_id}/messages", methods=[func.HttpMethod.GET])
def thread_messages(req: func.HttpRequest) -> func.HttpResponse:
    thread_id = req.route_params["thread_id"]
    return _serve(req, lambda: read_api.thread_messages(thread_id, req.params.get("user_id"), services()), signed=True)


@app.function_name("thread_attachment")
@app.route(route="threads/{thread_id}/messages/{message_key}/attachments/{index:int}", methods=[func.HttpMethod.GET])
def thread_attachment(req: func.HttpRequest) -> func.HttpResponse:
    p = req.route_params
    return _serve(
        req,
        lambda: read_api.attachment(
            p["thread_id"], p["message_key"], p["index"], req.params.get("user_id"), services()
        ),
        signed=True,
    )


@app.function_name("user_skips")
@app.route(route="users/{user_id}/skips", methods=[func.HttpMethod.GET])
def user_skips(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(req, lambda: read_api.user_skips(req.route_params["user_id"], services()), signed=True)


# -- Workers and timers ---------------------------------------------------------------------------------------------


def _body(msg: func.QueueMessage) -> str:
    return msg.get_body().decode(errors="replace")


@app.function_name("inbound_worker")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_INBOUND, connection=STORAGE)
def inbound_worker(msg: func.QueueMessage) -> None:
    # Each reference's span joins the trace of the notification that named it, where its outcome is logged
    # (sync_core.inbound): the pack's summary, in no one trace, is for a debugging session only.
    log.debug("%s: %s", names.QUEUE_INBOUND, workers.run_inbound(_body(msg), services()))


@app.function_name("lifecycle_worker")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_LIFECYCLE, connection=STORAGE)
def lifecycle_worker(msg: func.QueueMessage) -> None:
    body = _body(msg)
    with telemetry.operation(names.QUEUE_LIFECYCLE, telemetry.carried(body)):  # the lifecycle webhook's trace
        log.info("%s: %s", names.QUEUE_LIFECYCLE, workers.run_lifecycle(body, services()))


@app.function_name("catchup_worker")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_CATCHUP, connection=STORAGE)
def catchup_worker(msg: func.QueueMessage) -> None:
    body = _body(msg)
    with telemetry.operation(names.QUEUE_CATCHUP, telemetry.carried(body)):  # the trace of the path that asked
        log.info("%s: %s", names.QUEUE_CATCHUP, workers.run_catchup(body, services()))


@app.function_name("events_worker")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_EVENTS, connection=STORAGE)
def events_worker(msg: func.QueueMessage) -> None:
    """One delivery attempt of an event to Enrollio (its span joins the trace of the event's fact, where its outcome
    is logged: sync_core.delivery)."""
    log.debug("%s: %s", names.QUEUE_EVENTS, workers.run_events(_body(msg), services()))


@app.function_name("inbound_poison")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_INBOUND + names.POISON_SUFFIX, connection=STORAGE)
def inbound_poison(msg: func.QueueMessage) -> None:
    workers.record_poison(names.QUEUE_INBOUND, _body(msg), services())


@app.function_name("lifecycle_poison")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_LIFECYCLE + names.POISON_SUFFIX, connection=STORAGE)
def lifecycle_poison(msg: func.QueueMessage) -> None:
    workers.record_poison(names.QUEUE_LIFECYCLE, _body(msg), services())


@app.function_name("catchup_poison")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_CATCHUP + names.POISON_SUFFIX, connection=STORAGE)
def catchup_poison(msg: func.QueueMessage) -> None:
    workers.record_poison(names.QUEUE_CATCHUP, _body(msg), services())


@app.function_name("events_poison")
@app.queue_trigger(arg_name="msg", queue_name=names.QUEUE_EVENTS + names.POISON_SUFFIX, connection=STORAGE)
def events_poison(msg: func.QueueMessage) -> None:
    workers.record_poison(names.QUEUE_EVENTS, _body(msg), services())


@app.function_name("renew_subscriptions")
@app.timer_trigger(arg_name="timer", schedule="0 0 * * * *")  # hourly; renewal window is 24 h
def renew_subscriptions(timer: func.TimerRequest) -> None:
    with telemetry.operation("renew_subscriptions"):
        log.info("renewal queued for %d subscriptions", len(upkeep.schedule_renewals(services())))


@app.function_name("schedule_catchups")
@app.timer_trigger(arg_name="timer", schedule="0 */15 * * * *")
def schedule_catchups(timer: func.TimerRequest) -> None:
    with telemetry.operation("schedule_catchups"):
        log.info("catch-up requested for %d connections", catchup.schedule_catchups(services()))


@app.function_name("prune_spent_signatures")
@app.timer_trigger(arg_name="timer", schedule="0 30 * * * *")  # hourly: records are per hour of expiry
def prune_spent_signatures(timer: func.TimerRequest) -> None:
    log.info("spent signatures forgotten: %d", replay.prune(services()))


@app.function_name("sweep_event_outbox")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *")  # an unwoken event waits at most 10 + 5 minutes
def sweep_event_outbox(timer: func.TimerRequest) -> None:
    with telemetry.operation("sweep_event_outbox"):
        log.info("events woken by the sweeper: %d", delivery.sweep(services()))


@app.function_name("openapi")
@app.route(route="openapi.json", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI description of every HTTP route."""
    return _json(200, openapi.document())
