"""What the server and its components share: Graph's error and JSON answers, the principal, the route key, and
the interfaces between the server and its components.

The server (``server.py``) composes the components (``faults``, ``identity``, ``mail``, ``subscriptions``); they
know it only as a ``Host``: the few things of the server they use. So the components import this module, the
server imports the components, and nothing imports the server back.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from werkzeug.wrappers import Request, Response

from devtools.emulator.state import World

# A handler may set ``request.environ[ROUTE_KEY]`` to a route template (e.g. ``"GET /users/{id}/messages/{id}"``);
# the request log counts by it.
ROUTE_KEY = "emulator.route"


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """Graph's error body: ``{"error": {"code", "message", "innerError"}}`` (CONTRACT.md section 8)."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4())},
        }
    }
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)


@dataclass(frozen=True)
class Principal:
    """Who a Graph request acts as: the signed-in mailbox and the app (client id)."""

    mailbox_id: str
    client_id: str


class Component(Protocol):
    def control(self, request: Request) -> Response | None: ...


class GraphComponent(Component, Protocol):
    def graph(self, request: Request, principal: Principal) -> Response | None: ...


class ScopeSource(Protocol):
    """The identity component, as mail and subscriptions use it."""

    def scopes(self, request: Request) -> frozenset[str]: ...


class GrantListener(Protocol):
    """The subscriptions component, as identity uses it."""

    def grant_revoked(self, mailbox_id: str) -> None: ...


class RequestCounter(Protocol):
    """The request log, as the mail control endpoints use it."""

    def counts(self) -> dict[str, dict[str, int]]: ...

    def clear(self) -> None: ...


class Host(Protocol):
    """What a component may use of the server that composes it (``EmulatorServer`` is one)."""

    @property
    def world(self) -> World: ...

    @property
    def base_url(self) -> str: ...

    @property
    def graph_base_url(self) -> str: ...

    @property
    def identity(self) -> ScopeSource: ...

    @property
    def subscriptions(self) -> GrantListener: ...

    @property
    def log(self) -> RequestCounter: ...
