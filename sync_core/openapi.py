"""The OpenAPI description of the HTTP API, served at ``GET /api/openapi.json``.

Request bodies come from the pydantic models that validate them, so the document cannot drift from the code;
a test checks that every HTTP function is described here and nothing else is.
"""

from __future__ import annotations

from typing import Any

from sync_core.connect import DisconnectRequest
from sync_core.send import IDEMPOTENCY_HEADER
from sync_core.send_request import SendRequest
from sync_core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

SIGNED: list[dict[str, list[str]]] = [{"enrollioSignature": [], "functionKey": []}]
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input; `fields` names each problem",
        401: "missing, bad or stale signature",
        403: "another user's thread",
        404: "not found",
        409: "Idempotency-Key reused with another body, or still in progress",
        413: "an attachment over the cap (named)",
        502: "Microsoft Graph refused; its error code is passed on",
        503: "Graph or storage unavailable; see Retry-After",
    }
    return {str(c): _json(text[c], ERROR) for c in codes}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, required: bool = True, description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}
    return {**parameter, "description": description} if description else parameter


CONNECT_LINK = {
    "user_id": "the Enrollio user connecting a mailbox",
    "account_id": "the Enrollio account the user belongs to",
    "return_url": "where the browser goes back to with the outcome; must start with an ENROLLIO_RETURN_URLS prefix",
    "exp": "Unix seconds after which the link is refused",
    "sig": "hex HMAC-SHA256 with the shared secret of 'connect-link\\n' + the other parameters sorted by name and "
    "form-encoded (README, Signed connect links)",
}


PATHS: dict[str, dict[str, Any]] = {
    "/api/health": {
        "get": {
            "summary": "Storage, identity platform and Graph reachability",
            "security": [],
            "responses": {"200": _json("all reachable"), "503": _json("names what is not reachable")},
        }
    },
    "/api/outlook/connect": {
        "get": {
            "summary": "Start connecting a user's Outlook mailbox (a signed link from Enrollio, opened in a browser)",
            "security": [],
            "parameters": [_query(n, description=text) for n, text in CONNECT_LINK.items()]
            + [
                _query(
                    "login_hint",
                    required=False,
                    description="the mailbox address to pre-fill Microsoft's sign-in with (signed like the rest)",
                )
            ],
            "responses": {
                "302": {"description": "to Microsoft's sign-in"},
                "400": {"description": "bad link"},
                "401": {"description": "forged or expired link"},
            },
        }
    },
    "/api/outlook/callback": {
        "post": {
            "summary": "Microsoft's form_post answer after sign-in (single-use state)",
            "security": [],
            "responses": {
                "302": {"description": "back to Enrollio's return_url with outcome, address or reason"},
                "400": {"description": "unknown, expired or reused sign-in"},
            },
        },
        "get": {
            "summary": "Microsoft's query answer (errors before the flow completes)",
            "security": [],
            "responses": {"302": {"description": "back to Enrollio's return_url"}, "400": {"description": "bad state"}},
        },
    },
    "/api/outlook/disconnect": {
        "post": {
            "summary": "Disconnect a mailbox (R8): its subscription and tokens are deleted",
            "security": SIGNED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": DisconnectRequest.model_json_schema()}},
            },
            "responses": {"200": _json("the connection, disconnected"), **_errors(400, 401, 404)},
        }
    },
    "/api/users/{user_id}/connections": {
        "get": {
            "summary": "A user's connections with their health",
            "security": SIGNED,
            "parameters": [_path_param("user_id")],
            "responses": {"200": _json("connections"), **_errors(401)},
        }
    },
    "/api/users/{user_id}/skips": {
        "get": {
            "summary": "Messages of Enrollio threads that did not sync, with reason codes",
            "security": SIGNED,
            "parameters": [_path_param("user_id")],
            "responses": {"200": _json("skips"), **_errors(401)},
        }
    },
    "/api/send": {
        "post": {
            "summary": "Send an email (routed by R7); through Outlook when the rules say so",
            "security": SIGNED,
            "parameters": [
                {"name": IDEMPOTENCY_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SendRequest.model_json_schema()}},
            },
            "responses": {
                "200": _json("route outlook (ids, from) or account_provider (reason)"),
                **_errors(400, 401, 403, 404, 409, 413, 502, 503),
            },
        }
    },
    "/api/threads/{thread_id}/messages": {
        "get": {
            "summary": "A thread's messages in order",
            "security": SIGNED,
            "parameters": [_path_param("thread_id"), _query("user_id")],
            "responses": {"200": _json("the thread"), **_errors(400, 401, 403, 404)},
        }
    },
    "/api/threads/{thread_id}/messages/{message_key}/attachments/{index}": {
        "get": {
            "summary": "An attachment's bytes",
            "security": SIGNED,
            "parameters": [
                _path_param("thread_id"),
                _path_param("message_key"),
                _path_param("index"),
                _query("user_id"),
            ],
            "responses": {
                "200": {"description": "the bytes", "content": {"application/octet-stream": {}}},
                **_errors(400, 401, 403, 404),
            },
        }
    },
    "/api/graph/notifications": {
        "post": {
            "summary": "Microsoft Graph change notifications (validationToken handshake first)",
            "security": [],
            "parameters": [_query("validationToken", required=False)],
            "responses": {
                "200": {"description": "the handshake: the token as text/plain"},
                "202": _json("accepted and rejected counts"),
                **_errors(400, 503),
            },
        }
    },
    "/api/graph/lifecycle": {
        "post": {
            "summary": "Microsoft Graph lifecycle notifications (validationToken handshake first)",
            "security": [],
            "parameters": [_query("validationToken", required=False)],
            "responses": {"200": {"description": "the handshake"}, "202": _json("queued events"), **_errors(400, 503)},
        }
    },
    "/api/openapi.json": {
        "get": {"summary": "This document", "security": [], "responses": {"200": _json("OpenAPI 3.1")}}
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Enrollio Outlook 2-way sync",
            "version": "1.0.0",
            "description": (
                f"Enrollio-facing calls carry {TIMESTAMP_HEADER} (Unix seconds) and {SIGNATURE_HEADER}: v1=<hex "
                "HMAC-SHA256 of '{timestamp}\\n{METHOD}\\n{path?query}\\n' + body> with the shared secret."
            ),
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "enrollioSignature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER},
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "fields": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
    }
