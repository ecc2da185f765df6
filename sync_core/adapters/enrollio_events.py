"""POST one signed event to Enrollio's events URL: the only I/O of event delivery besides storage.

No redirect is followed (the signed body would go somewhere Enrollio did not name), no proxy or CA bundle from the
environment is needed beyond the system's, and the answer is reduced to what the delivery policy decides on.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from sync_core.adapters.graph import parse_retry_after

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0  # Standard Webhooks receivers answer quickly and do their work later


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (connection refused, timeout)
    retry_after: float | None = None
    error: str = ""


def post_event(session: requests.Session, url: str, body: bytes, headers: dict[str, str]) -> Answer:
    try:
        response = session.post(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return Answer(None, error=type(exc).__name__)
    with response:
        return Answer(response.status_code, parse_retry_after(response.headers.get("Retry-After")))
