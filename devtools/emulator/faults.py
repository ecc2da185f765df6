"""Throttling and fault injection for Graph requests, all off by default (CONTRACT.md section 8).

Outlook limits apply per app (client id) and mailbox, and one mailbox's throttling never affects another:
- ``concurrency``: at most N requests in flight (Outlook: 4); one more gets 429 at once;
- ``rate_limit`` / ``rate_window_seconds``: at most N requests per sliding window (Outlook: 10,000 per 10 min);
  refused requests count too ("usage keeps being counted while throttled");
- ``fail_503_rate`` / ``fail_504_rate``: a share of requests answer 503 (with Retry-After) or 504, drawn from a
  seeded RNG so a test sees the same sequence every run;
- ``latency_ms``: added to every admitted request, while it holds its concurrency slot;
- ``fail_paths``: ``{substring: status}``: a request whose path, or path and (decoded) query string, contains the
  substring answers that status (429 and 503 with ``Retry-After``), e.g. one message that Graph refuses for good
  (400) or keeps failing (503), or only one form of request for it (``{id}?$select=...``).
  The value may also be ``{"status", "method"?, "after"?, "times"?}``: only requests with that method count,
  the first ``after`` of them go through, then ``times`` of them fail (every one after that when ``times`` is
  absent), e.g. the second range PUT of an upload session refused once. Counts restart on every configure.
  A test's script, not a claim about Graph: it says which request fails, never how Graph decides.
  Upload-session URLs (``mail_upload``) pass through these faults too, as the session's mailbox and app.
429s carry ``Retry-After`` in seconds, possibly fractional (e.g. ``2.128``), and the body of
``tests/graph_samples/error-429-too-many-requests.json``.

Control: ``GET /_emulator/faults`` (the settings), ``POST /_emulator/faults`` (JSON with any of the fields above,
plus ``retry_after_seconds`` and ``seed``; unknown fields are a 400), ``DELETE /_emulator/faults`` (all off).
Python: ``server.faults.configure(concurrency=4, latency_ms=300)`` and ``server.faults.reset()``.
``server.faults.peak_in_flight(client_id, mailbox_id)``: the most requests of that app on that mailbox that were in
flight at once since the last configure or reset (whether or not ``concurrency`` is set): what a test of the
service's own limit reads.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from devtools.emulator.web import Host, Principal, graph_error, json_response

Key = tuple[str, str]  # (client id, mailbox id)
FailPath = int | dict[str, Any]  # a status, or {"status", "method"?, "after"?, "times"?}


@dataclass(frozen=True)
class FaultSettings:
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_window_seconds: float = 600.0
    retry_after_seconds: float = 2.128  # the documented example value (CONTRACT.md section 8)
    fail_503_rate: float = 0.0
    fail_504_rate: float = 0.0
    latency_ms: int = 0
    seed: int = 0
    fail_paths: dict[str, FailPath] = field(default_factory=dict)

    def validated(self) -> FaultSettings:
        """These settings, or ValueError naming the first bad field."""
        for name in ("concurrency", "rate_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}: expected a positive integer or null")
        for name in ("fail_503_rate", "fail_504_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number from 0 to 1")
        if self.fail_503_rate + self.fail_504_rate > 1.0:
            raise ValueError("fail_503_rate: fail_503_rate + fail_504_rate must not exceed 1")
        for name in ("rate_window_seconds", "retry_after_seconds", "latency_ms"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError("seed: expected an integer")
        if not isinstance(self.fail_paths, dict) or not all(
            isinstance(k, str) and k and _valid_fail_path(v) for k, v in self.fail_paths.items()
        ):
            raise ValueError(
                'fail_paths: expected {non-empty path substring: status 400-599 or {"status", "method"?, '
                '"after"?: n >= 0, "times"?: n >= 1}}'
            )
        return self


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _valid_fail_path(value: Any) -> bool:
    if isinstance(value, dict):
        return (
            set(value) <= {"status", "method", "after", "times"}
            and not isinstance(value.get("status"), dict)
            and _valid_fail_path(value.get("status"))
            and isinstance(value.get("method", ""), str)
            and _count(value.get("after", 0), 0)
            and (value.get("times") is None or _count(value["times"], 1))
        )
    return isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599


def throttled(retry_after: float, reason: str) -> Response:
    """A 429 shaped like tests/graph_samples/error-429-too-many-requests.json, with a (fractional) Retry-After."""
    body = {
        "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "message": "Please retry after",
                "request-id": str(uuid.uuid4()),
                "status": "429",
            },
            "message": f"Please retry again later. ({reason})",
        }
    }
    return json_response(body, 429, {"Retry-After": f"{retry_after:.3f}".rstrip("0").rstrip(".") or "0"})


def scripted_failure(status: int, retry_after: float) -> Response:
    """The answer ``fail_paths`` scripts: Graph's error shape, with ``Retry-After`` where Graph sends one."""
    if status == 429:
        return throttled(retry_after, "scripted")
    headers = {"Retry-After": f"{retry_after:g}"} if status == 503 else None
    codes = {400: "ErrorInvalidRequest", 403: "ErrorAccessDenied", 503: "serviceNotAvailable"}
    return graph_error(status, codes.get(status, "UnknownError"), f"scripted failure ({status})", headers)


class Faults:
    """Decides, per Graph request, whether it goes ahead; holds its concurrency slot while it runs."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self._lock = threading.Lock()
        self.settings = FaultSettings()
        self._rng = random.Random(0)
        self._in_flight: dict[Key, int] = {}
        self._peak: dict[Key, int] = {}
        self._recent: dict[Key, deque[float]] = {}
        self._matched: dict[str, int] = {}  # requests each fail_paths entry has seen (its "after"/"times")

    def configure(self, **changes: Any) -> FaultSettings:
        """Change some settings (the rest stay); raises ValueError naming a bad or unknown field."""
        known = {f.name for f in dataclasses.fields(FaultSettings)}
        if unknown := sorted(set(changes) - known):
            raise ValueError(f"{unknown[0]}: unknown fault setting (known: {', '.join(sorted(known))})")
        with self._lock:
            self.settings = dataclasses.replace(self.settings, **changes).validated()
            self._rng = random.Random(self.settings.seed)
            self._recent.clear()
            self._matched.clear()
            self._peak.clear()
            return self.settings

    def reset(self) -> FaultSettings:
        """Everything off, counters cleared."""
        with self._lock:
            self.settings = FaultSettings()
            self._rng = random.Random(0)
            self._recent.clear()
            self._matched.clear()
            self._peak.clear()
            return self.settings

    def in_flight(self, client_id: str, mailbox_id: str) -> int:
        """Requests of this app on this mailbox currently holding a slot."""
        with self._lock:
            return self._in_flight.get((client_id, mailbox_id), 0)

    def peak_in_flight(self, client_id: str, mailbox_id: str) -> int:
        """The most requests of this app on this mailbox in flight at once since the last configure or reset."""
        with self._lock:
            return self._peak.get((client_id, mailbox_id), 0)

    @contextmanager
    def admit(self, request: Request, principal: Principal) -> Iterator[Response | None]:
        """Yield None to let the request through, or the refusal to answer with; frees the slot on exit."""
        key = (principal.client_id, principal.mailbox_id)
        refusal, settings = self._enter(key, unquote(request.full_path), request.method)
        try:
            if refusal is None and settings.latency_ms:
                time.sleep(settings.latency_ms / 1000)
            yield refusal
        finally:
            if refusal is None:
                with self._lock:
                    self._in_flight[key] -= 1

    def _scripted(self, path: str, method: str) -> int | None:
        """The status ``fail_paths`` scripts for this request, if any (counting it for "after"/"times")."""
        for substring, rule in self.settings.fail_paths.items():
            if substring not in path:
                continue
            if isinstance(rule, int):
                return rule
            if rule.get("method") and rule["method"].upper() != method.upper():
                continue
            seen = self._matched[substring] = self._matched.get(substring, 0) + 1
            after, times = rule.get("after", 0), rule.get("times")
            if seen > after and (times is None or seen <= after + times):
                return int(rule["status"])
        return None

    def _enter(self, key: Key, path: str, method: str = "GET") -> tuple[Response | None, FaultSettings]:
        with self._lock:
            s = self.settings
            now = time.monotonic()
            if status := self._scripted(path, method):
                return scripted_failure(status, s.retry_after_seconds), s
            if s.rate_limit is not None:
                recent = self._recent.setdefault(key, deque())
                while recent and recent[0] <= now - s.rate_window_seconds:
                    recent.popleft()
                recent.append(now)
                if len(recent) > s.rate_limit:
                    # Free again once enough of the window's requests have aged out.
                    wait = recent[len(recent) - s.rate_limit - 1] + s.rate_window_seconds - now
                    return throttled(max(wait, 0.001), f"{s.rate_limit} requests per {s.rate_window_seconds:g} s"), s
            if s.concurrency is not None and self._in_flight.get(key, 0) >= s.concurrency:
                return throttled(s.retry_after_seconds, f"{s.concurrency} concurrent requests per app and mailbox"), s
            draw = self._rng.random() if (s.fail_503_rate or s.fail_504_rate) else 1.0
            if draw < s.fail_503_rate:
                return graph_error(
                    503,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable.",
                    {"Retry-After": f"{s.retry_after_seconds:g}"},
                ), s
            if draw < s.fail_503_rate + s.fail_504_rate:
                return graph_error(504, "UnknownError", "Gateway timeout."), s
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self._peak[key] = max(self._peak.get(key, 0), self._in_flight[key])
            return None, s

    def control(self, request: Request) -> Response | None:
        """``/_emulator/faults``: GET the settings, POST changes, DELETE to turn everything off."""
        if request.path.rstrip("/") != "/_emulator/faults":
            return None
        if request.method == "GET":
            return json_response(dataclasses.asdict(self.settings))
        if request.method == "DELETE":
            return json_response(dataclasses.asdict(self.reset()))
        if request.method != "POST":
            return graph_error(405, "BadRequest", f"{request.method} is not allowed on /_emulator/faults")
        try:
            changes = json.loads(request.get_data() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body: expected a JSON object")
            return json_response(dataclasses.asdict(self.configure(**changes)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            return graph_error(400, "BadRequest", str(exc))
