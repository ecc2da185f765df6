"""Enrollio's events endpoint, played locally: a small HTTP server that verifies each delivery with the reference
Standard Webhooks library (``standardwebhooks``) and keeps what it received. Used by ``make demo`` and the tests.

``down_for`` answers the first so many deliveries ``503`` (with ``Retry-After: 1``), as a receiver that is down;
``refuse_with`` answers every delivery with that status while it is set (a receiver that refuses them).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def new_secret() -> str:
    """A ``whsec_`` secret of 32 random bytes (what an Enrollio admin would generate)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Received:
    webhook_id: str
    type: str
    data: dict[str, Any]
    timestamp: str
    correlation_id: str | None
    signature_header: str


class EnrollioReceiver:
    def __init__(self, secret: str, down_for: int = 0) -> None:
        self.secret = secret
        self.down_for = down_for
        self.refuse_with: int | None = None
        self.attempts = 0
        self.refused_as_down = 0
        self.unverified = 0
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="enrollio-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/outlook-sync"

    def __enter__(self) -> EnrollioReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def by_id(self) -> dict[str, list[Received]]:
        """Each webhook-id and every delivery of it that was accepted."""
        with self._lock:
            out: dict[str, list[Received]] = {}
            for event in self.received:
                out.setdefault(event.webhook_id, []).append(event)
            return out

    def _accept(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.down_for:
                self.refused_as_down += 1
                return 503
            if self.refuse_with is not None:
                return self.refuse_with
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.unverified += 1
            return 400
        event = Received(
            webhook_id=headers["webhook-id"],
            type=payload["type"],
            data=payload["data"],
            timestamp=payload["timestamp"],
            correlation_id=payload.get("correlation_id"),
            signature_header=headers["webhook-signature"],
        )
        with self._lock:
            self.received.append(event)
        return 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._accept({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints what it received
                return

        return Handler


def describe(event: Received) -> str:
    """One line for a person: the event type and its ids and reasons (what Enrollio would act on)."""
    data = event.data
    what = {k: v for k, v in data.items() if k not in ("user_id", "account_id")}
    return f"{event.type:<28} {json.dumps(what, sort_keys=True)}"
