"""The OpenAPI description of the HTTP API, served at ``GET /api/openapi.json``.

Request bodies come from the pydantic models that validate them, and responses from the models below, so the
document cannot drift from the code: a test checks that every HTTP function is described here and nothing else
is, a validator resolves every ``$ref``, and the property-based suite checks every answer against its schema.
Every schema lives in ``components/schemas`` (pydantic's ``$defs`` are lifted there, references rewritten).
The events this service posts to Enrollio are its ``webhooks`` (OpenAPI 3.1), one per event type, their payloads
built from the models ``sync_core.events`` fills.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from sync_core.connect import ConnectLink, DisconnectRequest
from sync_core.event_signing import ID_HEADER as EVENT_ID_HEADER
from sync_core.event_signing import SIGNATURE_HEADER as EVENT_SIGNATURE_HEADER
from sync_core.event_signing import TIMESTAMP_HEADER as EVENT_TIMESTAMP_HEADER
from sync_core.events import EVENT_DATA, EventType
from sync_core.routing import OUTLOOK_REASONS, REASONS
from sync_core.send_request import MAX_ADDRESS, SendRequest
from sync_core.signing import IDEMPOTENCY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from sync_core.webhook import ChangeNotificationCollection

REF = "#/components/schemas/{model}"


# -- What the routes answer (documentation only: the use cases build plain dicts of this shape) ------------------


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="allow")
    field: str | None = Field(default=None, description="the field, header or parameter at fault")
    error: str | None = None


class Error(BaseModel):
    """Every 4xx and 5xx JSON answer."""

    error: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list, description="each problem, naming its field")


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Check]


class ConnectionView(BaseModel):
    connection_id: str
    address: str
    status: Literal["active", "connected", "needs_reconnect", "disconnected"]
    active: bool
    status_reason: str | None
    connected_at: str
    subscription_expires_at: str | None
    last_notification_at: str | None


class Connections(BaseModel):
    user_id: str
    connections: list[ConnectionView]


class SentThroughOutlook(BaseModel):
    route: Literal["outlook"]
    thread_id: str
    message_id: str
    internet_message_id: str
    conversation_id: str
    from_: str = Field(alias="from")


class SentThroughAccountProvider(BaseModel):
    route: Literal["account_provider"]
    reason: str = Field(
        description="the sender rule (R7) or connection state that decided; bulk_from_not_thread_address: a bulk "
        "reply's From is another of the user's connected addresses, not its thread's mailbox's",
        json_schema_extra={"enum": [r for r in REASONS if r not in OUTLOOK_REASONS]},
    )


class ContactView(BaseModel):
    email: str
    name: str
    id: str


class AttachmentView(BaseModel):
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: str | None = Field(description="an inline image's Content-ID: the body shows it where it says cid:…")
    link: str | None = Field(description="a cloud file attachment's link")
    download: str | None = Field(description="the path of its bytes, when they are stored")


class BodyView(BaseModel):
    content_type: Literal["html", "text"]
    content: str


class MessageView(BaseModel):
    message_key: str
    internet_message_id: str
    direction: Literal["inbound", "outbound"]
    origin: Literal["enrollio", "outlook"]
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str]
    subject: str
    sent_at: str
    body: BodyView
    attachments: list[AttachmentView]


class ThreadView(BaseModel):
    thread_id: str
    contact: ContactView
    subject: str
    conversation_id: str
    messages: list[MessageView]


class SkipView(BaseModel):
    thread_id: str
    connection_id: str
    internet_message_id: str
    direction: Literal["inbound", "outbound"]
    reason: str = Field(
        description="attachment_too_large (each file over the cap), graph_error (Graph refused the message or an "
        "attachment for good), unreadable_message, unstorable (storage refused to keep it)"
    )
    details: list[dict[str, Any]] = Field(
        description="attachment_too_large: one object per file over the cap, {name, cap, graph_size} (graph_size: "
        "the size Graph reports, Exchange's count, a little over the file's) plus, when its bytes were counted as "
        "they were downloaded, measured_size (the file's bytes) or measured_at_least (reading stopped there); "
        "the other reasons: [{error}] with Graph's or storage's answer"
    )
    subject: str
    at: str


class Skips(BaseModel):
    user_id: str
    skips: list[SkipView]


class Acknowledgement(BaseModel):
    """What the webhooks answer Graph: how many items were accepted, rejected (by reason) and queued."""

    accepted: int
    rejected: dict[str, int]
    queued_messages: int


class CallbackForm(BaseModel):
    """Microsoft's answer to the sign-in (form_post), as the identity platform sends it."""

    model_config = ConfigDict(extra="allow")
    state: str | None = None
    code: str | None = None
    error: str | None = None
    error_description: str | None = None


_REQUESTS: list[type[BaseModel]] = [SendRequest, DisconnectRequest, ChangeNotificationCollection, CallbackForm]
_RESPONSES: list[type[BaseModel]] = [
    Error,
    Health,
    ConnectionView,
    Connections,
    SentThroughOutlook,
    SentThroughAccountProvider,
    ThreadView,
    Skips,
    Acknowledgement,
    *dict.fromkeys(EVENT_DATA.values()),
]


def schemas() -> dict[str, Any]:
    """Every model's JSON Schema by name, nested models included, references into ``components/schemas``."""
    models = [(m, "validation") for m in _REQUESTS] + [(m, "serialization") for m in _RESPONSES]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    return dict(top["$defs"])


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


# -- Building blocks --------------------------------------------------------------------------------------------

ERROR_TEXT = {
    400: "invalid input; `fields` names each problem",
    401: "missing, bad, stale or already used signature (error 'signature_already_used': sign afresh and resend); "
    "`fields` names the header or parameter",
    403: "another user's thread or connection (a connection id that is not the user's, whoever's it is)",
    404: "not found; `fields` names what",
    409: "Idempotency-Key reused with another body, or still in progress",
    413: "over a cap; `fields` names what (the message over the mailbox's size limit MAX_MESSAGE_BYTES counted "
    "encoded, or refused by Graph for its size; html or text making the draft's request over Graph's 4 MiB; a send "
    "over Outlook's upload throttle; the notifications of one request)",
    502: "Microsoft Graph refused (a send names the attachment whose upload failed); its error code is passed on",
    503: "Graph or storage unavailable, the service misconfigured, or a send that could not finish safely within its "
    "Idempotency-Key's lease (nothing sent); see Retry-After",
}
PAGE = {"text/html": {"schema": {"type": "string"}}}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(ERROR_TEXT[c], _ref(Error)) for c in codes}


def _pages(*codes: int) -> dict[str, Any]:
    """A browser's errors: a short page naming the problem (and its field)."""
    return {str(c): {"description": f"{ERROR_TEXT[c]} (a page)", "content": PAGE} for c in codes}


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(
    name: str, required: bool = True, schema: dict[str, Any] | None = None, description: str = ""
) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": required, "schema": schema or {"type": "string"}}
    return {**parameter, "description": description} if description else parameter


# What a new integrator needs to know of each parameter of the connect link (README, "Signed connect links").
CONNECT_LINK = {
    "user_id": "the Enrollio user connecting a mailbox",
    "account_id": "the Enrollio account the user belongs to",
    "return_url": "where the browser goes back to with the outcome; must start with an ENROLLIO_RETURN_URLS prefix",
    "nonce": "random, fresh for every link (a link works once)",
    "login_hint": "the mailbox address to pre-fill Microsoft's sign-in with (signed like the rest)",
    "exp": "Unix seconds after which the link is refused (at most 15 minutes ahead)",
    "sig": "hex HMAC-SHA256 with the shared secret of 'connect-link\\n' + the other parameters sorted by name and "
    "form-encoded (README, Signed connect links)",
}


def _link_parameters() -> list[dict[str, Any]]:
    """The connect link's query: its fields as ``ConnectLink`` checks them, then expiry and signature."""
    fields = ConnectLink.model_json_schema()
    required = set(fields.get("required", []))
    described = [
        _query(
            name,
            name in required,
            {k: v for k, v in schema.items() if k not in ("title", "default")},
            CONNECT_LINK[name],
        )
        for name, schema in fields["properties"].items()
    ]
    return [
        *described,
        _query("exp", schema={"type": "string", "pattern": "^[0-9]{1,12}$"}, description=CONNECT_LINK["exp"]),
        _query("sig", schema={"type": "string", "pattern": "^[0-9a-f]{64}$"}, description=CONNECT_LINK["sig"]),
    ]


SIGNED: list[dict[str, list[str]]] = [
    {"enrollioTimestamp": [], "enrollioNonce": [], "enrollioSignature": [], "functionKey": []}
]
REDIRECT = {
    "description": "to the next step (Location); the first sets the browser cookie",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
HANDSHAKE = {
    "description": "the validation handshake: the token, as text/plain",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
WEBHOOK_BODY = {
    "required": False,
    "content": {
        "application/json": {"schema": _ref(ChangeNotificationCollection)},
        "text/plain": {"schema": {"type": "string", "maxLength": 0, "description": "the handshake's empty body"}},
    },
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}


PATHS: dict[str, dict[str, Any]] = {
    "/api/health": {
        "get": {
            "operationId": "getHealth",
            "summary": "Storage, identity platform and Graph reachability",
            "security": [],
            "responses": {"200": _json("all reachable", _ref(Health)), "503": _json("names what is not", _ref(Health))},
        }
    },
    "/api/outlook/connect": {
        "get": {
            "operationId": "startConnect",
            "summary": "Start connecting a user's Outlook mailbox (a signed link from Enrollio, opened in a browser; "
            "it works once and lives at most 15 minutes)",
            "security": [],
            "parameters": _link_parameters(),
            "responses": {
                "302": REDIRECT,
                **_pages(400, 401),
                "503": {
                    "description": "Microsoft's sign-in cannot be reached (a page: try again; the link is not used up),"
                    f" or {ERROR_TEXT[503]}",
                    "content": {**PAGE, **_errors(503)["503"]["content"]},
                },
            },
        }
    },
    "/api/outlook/callback": {
        "post": {
            "operationId": "finishConnect",
            "summary": "Microsoft's form_post answer after sign-in (single-use state, this browser's cookie)",
            "security": [],
            "requestBody": {
                "required": False,
                "content": {"application/x-www-form-urlencoded": {"schema": _ref(CallbackForm)}},
            },
            "responses": {
                "302": {"description": "back to Enrollio's return_url with outcome, address or reason"},
                **_pages(400),
                **_errors(503),
            },
        },
        "get": {
            "operationId": "finishConnectByQuery",
            "summary": "Microsoft's query answer (errors before the flow completes)",
            "security": [],
            "parameters": [_query(n, required=False) for n in ("state", "code", "error", "error_description")],
            "responses": {"302": {"description": "back to Enrollio's return_url"}, **_pages(400), **_errors(503)},
        },
    },
    "/api/outlook/disconnect": {
        "post": {
            "operationId": "disconnect",
            "summary": "Disconnect a mailbox (R8): its subscription and tokens are deleted",
            "security": SIGNED,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(DisconnectRequest)}}},
            "responses": {
                "200": _json("the connection, disconnected", _ref(ConnectionView)),
                **_errors(400, 401, 403, 503),
            },
        }
    },
    "/api/users/{user_id}/connections": {
        "get": {
            "operationId": "listConnections",
            "summary": "A user's connections with their health",
            "security": SIGNED,
            "parameters": [_path_param("user_id")],
            "responses": {"200": _json("connections", _ref(Connections)), **_errors(400, 401, 503)},
        }
    },
    "/api/users/{user_id}/skips": {
        "get": {
            "operationId": "listSkips",
            "summary": "Messages of Enrollio threads that did not sync, with reason codes",
            "security": SIGNED,
            "parameters": [_path_param("user_id")],
            "responses": {"200": _json("skips", _ref(Skips)), **_errors(400, 401, 503)},
        }
    },
    "/api/send": {
        "post": {
            "operationId": "send",
            "summary": "Send an email (routed by R7); through Outlook when the rules say so",
            "security": SIGNED,
            "parameters": [
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "covered by the signature; a retry with the same key gets the first answer",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(SendRequest)}}},
            "responses": {
                "200": _json(
                    "route outlook (ids, from) or account_provider (reason)",
                    {"oneOf": [_ref(SentThroughOutlook), _ref(SentThroughAccountProvider)]},
                    {"Idempotent-Replayed": {"schema": {"type": "string"}, "description": "'true' on a replay"}},
                ),
                **_errors(400, 401, 403, 404, 409, 413, 502),
                "503": _json(ERROR_TEXT[503], _ref(Error), RETRY_AFTER),
            },
        }
    },
    "/api/threads/{thread_id}/messages": {
        "get": {
            "operationId": "getThread",
            "summary": "A thread's messages in order",
            "security": SIGNED,
            "parameters": [_path_param("thread_id"), _query("user_id")],
            "responses": {"200": _json("the thread", _ref(ThreadView)), **_errors(400, 401, 403, 404, 503)},
        }
    },
    "/api/threads/{thread_id}/messages/{message_key}/attachments/{index}": {
        "get": {
            "operationId": "getAttachment",
            "summary": "An attachment's bytes, as a download (its stored type when well-formed, else opaque bytes)",
            "security": SIGNED,
            "parameters": [
                _path_param("thread_id"),
                _path_param("message_key"),
                _path_param("index", {"type": "integer"}),
                _query("user_id"),
            ],
            "responses": {
                "200": {
                    "description": "the bytes",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_errors(400, 401, 403, 404, 503),
            },
        }
    },
    "/api/graph/notifications": {
        "post": {
            "operationId": "receiveNotifications",
            "summary": "Microsoft Graph change notifications (validationToken handshake first); at most 1,000 items "
            "and 100 distinct subscriptions per request",
            "security": [],
            "parameters": [_query("validationToken", required=False)],
            "requestBody": WEBHOOK_BODY,
            "responses": {
                "200": HANDSHAKE,
                "202": _json("accepted and rejected counts", _ref(Acknowledgement)),
                **_errors(400, 413, 503),
            },
        }
    },
    "/api/graph/lifecycle": {
        "post": {
            "operationId": "receiveLifecycleEvents",
            "summary": "Microsoft Graph lifecycle notifications (validationToken handshake first); the same caps",
            "security": [],
            "parameters": [_query("validationToken", required=False)],
            "requestBody": WEBHOOK_BODY,
            "responses": {
                "200": HANDSHAKE,
                "202": _json("queued events", _ref(Acknowledgement)),
                **_errors(400, 413, 503),
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
        }
    },
}


# -- Events to Enrollio (the document's webhooks) -------------------------------------------------------------

EVENT_SUMMARIES = {
    EventType.MESSAGE_SYNCED: "A message of an Enrollio thread (a reply, or the user's own from Outlook) is stored",
    EventType.MESSAGE_SKIPPED: "A message of an Enrollio thread did not sync; the reason is the skips read's",
    EventType.MESSAGE_SENT: "A send through Outlook is done (Graph accepted it)",
    EventType.CONNECTION_CONNECTED: "A connection is connected (new, or reconnected)",
    EventType.CONNECTION_NEEDS_RECONNECT: "A connection needs its user to reconnect (the grant was lost)",
    EventType.CONNECTION_DISCONNECTED: "A connection was disconnected",
}
EVENT_DELIVERY = (
    "POSTed to ENROLLIO_EVENTS_URL, signed as the Standard Webhooks specification says: "
    f"{EVENT_SIGNATURE_HEADER} is 'v1,' + base64 HMAC-SHA256, with the bytes of the whsec_ secret "
    "(ENROLLIO_EVENTS_SECRET), of '{" + EVENT_ID_HEADER + "}.{" + EVENT_TIMESTAMP_HEADER + "}.{body}'; any "
    "Standard Webhooks library verifies it. Delivered at least once: deduplicate on " + EVENT_ID_HEADER + ", the "
    "same for every delivery of one fact. Events are not ordered: each carries the moment of its fact. Answer 2xx "
    "once stored; any other answer (a redirect is never followed), or none, is retried with back-off (Retry-After "
    "honoured) for 3 days, then the event is refused (recorded for the operator, who can replay it). A "
    "webhook-signature may hold two signatures, space-separated, while the secret is rotated: either verifies. "
    "No body, subject or address: "
    "ids, reason codes and sizes; details through the read API."
)


def _event_body(kind: EventType) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"const": kind.value},
            "timestamp": {"type": "string", "format": "date-time", "description": "when the fact happened (UTC)"},
            "data": _ref(EVENT_DATA[kind]),
            "correlation_id": {
                "type": ["string", "null"],
                "description": "the trace of the work that made the fact (Application Insights operation_Id)",
            },
        },
    }


def _event_header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "description": description, "schema": {"type": "string"}}


EVENT_HEADERS = [
    _event_header(EVENT_ID_HEADER, "evt_ + 32 hex digits: stable per fact (deduplicate on it)"),
    _event_header(EVENT_TIMESTAMP_HEADER, "Unix seconds of this attempt (refuse one far from your clock)"),
    _event_header(EVENT_SIGNATURE_HEADER, "v1,<base64 HMAC-SHA256>, space-separated when several"),
]


def webhooks() -> dict[str, Any]:
    """One webhook per event type: what Enrollio's events endpoint receives and should answer."""
    return {
        kind.value: {
            "post": {
                "operationId": "event" + "".join(part.title() for part in kind.value.replace(".", "_").split("_")),
                "summary": EVENT_SUMMARIES[kind],
                "description": EVENT_DELIVERY,
                "parameters": EVENT_HEADERS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _event_body(kind)}}},
                "responses": {
                    "2XX": {"description": "stored (or a duplicate): delivered"},
                    "default": {
                        "description": "retried with back-off (Retry-After honoured) for 3 days, then recorded for "
                        "the operator"
                    },
                },
            }
        }
        for kind in EventType
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Enrollio Outlook 2-way sync",
            "version": "1.1.0",
            "description": (
                f"Enrollio-facing calls carry {TIMESTAMP_HEADER} (Unix seconds, plain digits, at most 60 s ahead), "
                f"{NONCE_HEADER} (16 to 64 of A-Z a-z 0-9 _ -, new for each request) and {SIGNATURE_HEADER}: "
                "v2=<hex HMAC-SHA256 with the shared secret of '{timestamp}\\n{nonce}\\n{METHOD}\\n{canonical path"
                "[?canonical query]}\\n{Idempotency-Key or empty}\\n' + body>: path and query percent-decoded and "
                "re-encoded as UTF-8 (all but A-Z a-z 0-9 - . _ ~, and / in the path), query pairs form-decoded and "
                "kept in order (README, Signed requests). A POST's signature is accepted once. Addresses are at most "
                f"{MAX_ADDRESS} characters; every id is 1 to 256 characters without / \\ # ? % or control characters."
            ),
        },
        "paths": PATHS,
        "webhooks": webhooks(),
        "components": {
            "securitySchemes": {
                "enrollioTimestamp": {"type": "apiKey", "in": "header", "name": TIMESTAMP_HEADER},
                "enrollioNonce": {"type": "apiKey", "in": "header", "name": NONCE_HEADER},
                "enrollioSignature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER},
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            },
            "schemas": schemas(),
        },
    }
