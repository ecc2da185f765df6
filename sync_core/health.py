"""Health: can this app reach its storage, the identity platform and Microsoft Graph?

A probe is a port: a callable that returns a short detail when its dependency answered and raises otherwise.
``decide`` is the pure part (which checks failed -> the report); ``run_checks`` runs probes concurrently;
``probes_for`` builds the real probes from settings and clients, each bounded by a 2 s timeout and no retries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import ValidationError

from sync_core.adapters.storage import StorageClients
from sync_core.settings import Settings

Probe = Callable[[], str]

TIMEOUT_SECONDS = 2.0
# Per-operation options of the Azure SDKs: one attempt (their default retry policy would back off for seconds
# on a dead endpoint) and short connect/read timeouts.
_STORAGE_CALL: dict[str, Any] = {
    "retry_total": 0,
    "connection_timeout": TIMEOUT_SECONDS,
    "read_timeout": TIMEOUT_SECONDS,
}
_MAX_DETAIL = 300


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    checks: Mapping[str, Check]

    @property
    def http_status(self) -> int:
        return 200 if self.healthy else 503

    def to_json(self) -> dict[str, Any]:
        """The response body: ``{"status": "ok"|"unavailable", "checks": {name: {"ok", "detail"}}}``."""
        return {
            "status": "ok" if self.healthy else "unavailable",
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


def decide(checks: Mapping[str, Check]) -> HealthReport:
    """Healthy only when there is at least one check and every check passed."""
    return HealthReport(healthy=bool(checks) and all(c.ok for c in checks.values()), checks=dict(checks))


def run_checks(probes: Mapping[str, Probe]) -> HealthReport:
    """Run every probe at once (the slowest bounds the wait) and decide."""
    with ThreadPoolExecutor(max_workers=max(len(probes), 1), thread_name_prefix="health") as pool:
        futures = {name: pool.submit(_attempt, probe) for name, probe in probes.items()}
        return decide({name: future.result() for name, future in futures.items()})


def settings_unavailable(error: ValidationError) -> HealthReport:
    """The report when settings do not validate: one failed ``settings`` check naming each bad setting."""
    return decide({"settings": Check(ok=False, detail=describe_settings_error(error))})


def describe_settings_error(error: ValidationError) -> str:
    """``"GRAPH_CLIENT_ID: Field required; ..."``: names and reasons only.

    ``str(error)`` would echo the offending input values, which may be secrets; this endpoint is anonymous.
    """
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def probes_for(settings: Settings, storage: StorageClients, session: requests.Session) -> dict[str, Probe]:
    """The real probes: one cheap call per storage service, OIDC discovery, and a GET on Graph."""
    discovery = settings.graph_authority.rstrip("/") + "/v2.0/.well-known/openid-configuration"
    probes: dict[str, Probe] = {
        "blob": lambda: _first_page(storage.blobs.list_containers(results_per_page=1, **_STORAGE_CALL)),
        "queue": lambda: _first_page(storage.queues.list_queues(results_per_page=1, **_STORAGE_CALL)),
        "table": lambda: _first_page(storage.tables.list_tables(results_per_page=1, **_STORAGE_CALL)),
        "identity": lambda: _discovery_answers(session, discovery),
        "graph": lambda: _http_answers(session, settings.graph_base_url),
    }
    if settings.enrollio_events_url:  # configured, so it must be right (else events wait in the outbox)
        probes["events"] = lambda: _events_configured(settings)
    return probes


def _events_configured(settings: Settings) -> str:
    # Settings only, no call to Enrollio: its endpoint's answers are the delivery's business (make status).
    if settings.events_problem:
        raise ValueError(f"events to Enrollio are off (kept in the outbox until fixed): {settings.events_problem}")
    return f"signed with {len(settings.events_keys)} secret(s)"


def _attempt(probe: Probe) -> Check:
    try:
        return Check(ok=True, detail=probe())
    except Exception as exc:  # any failure of a dependency is a failed check, reported with its reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        return Check(ok=False, detail=f"{type(exc).__name__}: {reason}"[:_MAX_DETAIL])


def _first_page(pages: Any) -> str:
    # Fetching the first page is the request; an empty account is as reachable as a full one.
    next(iter(pages.by_page()), None)
    return "reachable"


def _http_answers(session: requests.Session, url: str) -> str:
    # Graph without a token answers 401: any HTTP answer proves the endpoint is reachable.
    response = session.get(url, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    return f"HTTP {response.status_code} from {url}"


def _discovery_answers(session: requests.Session, url: str) -> str:
    # Stricter than "any answer": MSAL turns a 4xx here into an error and needs both endpoints in the document
    # (CONTRACT.md, "Custom or local authority for tests"), so a wrong GRAPH_AUTHORITY must fail the check.
    response = session.get(url, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    if response.status_code != 200:
        raise LookupError(f"HTTP {response.status_code} from {url}")
    missing = _missing_keys(response.json(), ("authorization_endpoint", "token_endpoint"))
    if missing:
        raise LookupError(f"discovery document at {url} lacks {', '.join(missing)}")
    return f"HTTP 200 from {url}"


def _missing_keys(document: Any, keys: Iterable[str]) -> list[str]:
    return [key for key in keys if not (isinstance(document, dict) and document.get(key))]
