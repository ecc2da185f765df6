"""Telemetry that follows one message: a correlation id, spans, a few metrics; exported only when asked.

**The correlation id** is the W3C trace id of the operation a path starts in: a notification's webhook request, a
timer, an operator's call. It travels in the queue messages (each inbound reference carries it), so the worker's
span of that message joins the same trace; it is sent to Graph as ``client-request-id`` (a GUID, the header Graph
and its SDKs use to correlate a client's requests, docs/graph-contract.md section 11), written on the stored
message row (``CorrelationId``) and in the event to Enrollio (``correlation_id``). Every log record made while it is
current carries it as ``correlation_id`` (a log record factory), so a structured exporter ships it as a dimension.
In Application Insights, ``operation_Id`` of the app's spans, dependencies and log lines on that path is this id
(the host's own record of a queue-triggered invocation stays in the host's trace: it never sees the carried id).

**Exporting** (``configure``, once per process, on the first invocation, never at import): with
``APPLICATIONINSIGHTS_CONNECTION_STRING`` the Azure Monitor distro (``azure-monitor-opentelemetry``, imported only
then: it costs about a second) exports spans, Graph and Storage calls as dependencies (its ``requests`` and Azure SDK
instrumentations), metrics and the ``sync_core`` loggers' records; where the Functions Python worker configured it
already (with ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` the worker calls the distro itself at start-up and
joins each invocation to the host's trace), that provider is used as it is. ``OTEL_TRACES_EXPORTER=console`` prints a
local run's spans. Without either, the OpenTelemetry API is a no-op: the correlation id still reaches logs, Graph,
rows and events.

**What telemetry never holds**: a token, secret, body, subject or address. Spans carry ids and outcomes only;
the instrumented requests record status codes and URLs without their query (``scrub_urls``: an upload session's
``uploadUrl`` carries ``?authtoken=…``, a ``$filter`` may hold an address, a ``nextLink`` a skip token; Graph's paths
hold object ids, never an address), never headers or bodies; ``tests/integration/test_events_story.py`` checks a
whole story run's logs and spans for each of them, ``tests/test_telemetry_setup.py`` an upload session's PUT.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

    from sync_core.settings import Settings

log = logging.getLogger(__name__)

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
_tracer = trace.get_tracer("sync_core")
_meter = metrics.get_meter("sync_core")

# The few metrics operators chart (names in OpenTelemetry's dotted style; App Insights shows them as customMetrics).
notifications = _meter.create_counter("sync.notifications", description="Graph notification items, by outcome")
messages = _meter.create_counter("sync.messages", description="notified messages, by outcome and skip reason")
graph_throttled = _meter.create_counter("sync.graph.throttled", description="Graph answers 429, each retried")
end_to_end_lag = _meter.create_histogram(
    "sync.end_to_end_lag", unit="s", description="from a message's time at Graph to its row in Enrollio's store"
)
events = _meter.create_counter("sync.events", description="event deliveries to Enrollio, by outcome")


def correlation_id() -> str | None:
    """The current path's correlation id (32 hex digits), or None outside any operation."""
    return _correlation.get()


def client_request_id() -> str | None:
    """The correlation id as the GUID Graph's ``client-request-id`` header takes."""
    current = _correlation.get()
    return str(uuid.UUID(hex=current)) if current else None


def carried(message: str) -> str | None:
    """The correlation id a queue message carries (``"correlation_id"`` in its JSON), None when it has none."""
    try:
        value = json.loads(message)
    except ValueError:
        return None
    found = value.get("correlation_id") if isinstance(value, dict) else None
    return _valid(found) if isinstance(found, str) else None


def _valid(cid: str | None) -> str | None:
    if cid and len(cid) == 32 and all(c in "0123456789abcdef" for c in cid) and cid != "0" * 32:
        return cid
    return None


@contextlib.contextmanager
def operation(name: str, correlation: str | None = None, **attributes: str | int) -> Iterator[trace.Span]:
    """A span named ``name`` in the trace of ``correlation`` (carried from where the path began), else in the
    current one, else in a new one; its trace id is the correlation id while it runs."""
    carried = _valid(correlation)
    parent: Any = None
    if carried:
        # The carried id becomes this span's trace: a remote parent with that trace id (its span id is unknown).
        remote = SpanContext(int(carried, 16), secrets.randbits(64) or 1, True, TraceFlags(TraceFlags.SAMPLED))
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
    elif _correlation.get() is None and not trace.get_current_span().get_span_context().is_valid:
        fresh = SpanContext(secrets.randbits(128) or 1, secrets.randbits(64) or 1, True, TraceFlags(TraceFlags.SAMPLED))
        parent = trace.set_span_in_context(NonRecordingSpan(fresh))
    with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes) as span:
        trace_id = span.get_span_context().trace_id
        cid = carried or (f"{trace_id:032x}" if trace_id else None) or _correlation.get()
        token = _correlation.set(cid)
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _correlation.reset(token)


# -- Log records carry the correlation id ---------------------------------------------------------------------------

_factory_lock = threading.Lock()
_factory_installed = False


def _install_record_factory() -> None:
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            record.correlation_id = _correlation.get() or "-"
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


# -- URLs in spans lose their query -------------------------------------------------------------------------------

_URL_ATTRIBUTES = ("http.url", "url.full")  # the old and the new HTTP semantic conventions
_QUERY_ATTRIBUTES = ("url.query",)


def without_query(url: str) -> str:
    """``url`` without its query and fragment: what a span may keep of a request's URL."""
    return url.split("#", 1)[0].split("?", 1)[0]


def scrub_urls() -> SpanProcessor:
    """A span processor dropping the query of every URL a span records as it starts (the ``requests``/``urllib3``
    instrumentations set them then; OpenTelemetry's own redaction covers only a few cloud signature parameters, not
    Graph's ``authtoken``). Azure SDK spans keep only allowed query parameters already. Built on demand: the SDK is
    imported only when something exports."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span, SpanProcessor

    class ScrubUrls(SpanProcessor):
        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            attributes = span.attributes or {}
            for name in _URL_ATTRIBUTES:
                value = attributes.get(name)
                if isinstance(value, str) and ("?" in value or "#" in value):
                    span.set_attribute(name, without_query(value))
            for name in _QUERY_ATTRIBUTES:
                if attributes.get(name):
                    span.set_attribute(name, "REDACTED")

    return ScrubUrls()


# -- Exporting ----------------------------------------------------------------------------------------------------

_configured = False
_configure_lock = threading.Lock()


def _sdk_provider_present() -> bool:
    return type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.sdk")


def azure_monitor_credential(authentication: str | None) -> Any:
    """The identity telemetry authenticates as, from ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    (``ClientId=<id>;Authorization=AAD``, as Bicep sets it: local authentication is off); None without one."""
    parts = dict(p.split("=", 1) for p in (authentication or "").split(";") if "=" in p)
    if parts.get("Authorization") != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def configure(settings: Settings) -> None:
    """Set up exporting once per process (see the module docstring); log records carry the correlation id."""
    global _configured
    with _configure_lock:
        if _configured:
            return
        _configured = True
        _install_record_factory()
        if _sdk_provider_present():
            # The Functions worker (or a test) set a provider up: use it, its URLs scrubbed all the same.
            trace.get_tracer_provider().add_span_processor(scrub_urls())  # type: ignore[attr-defined]
            return
        if settings.applicationinsights_connection_string:
            from azure.monitor.opentelemetry import configure_azure_monitor  # heavy: only when it is used

            configure_azure_monitor(
                connection_string=settings.applicationinsights_connection_string,
                credential=azure_monitor_credential(settings.applicationinsights_authentication_string),
                logger_name="sync_core",
                enable_live_metrics=False,
                span_processors=[scrub_urls()],
                instrumentation_options={
                    name: {"enabled": False} for name in ("django", "fastapi", "flask", "psycopg2", "urllib")
                },
            )
            log.info("telemetry: exporting to Application Insights")
        elif (settings.otel_traces_exporter or "").strip().lower() == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            export_spans(ConsoleSpanExporter())


def export_spans(exporter: SpanExporter) -> None:
    """A local provider that hands each span to ``exporter`` as it ends, with Graph (``requests``) and Storage
    (Azure SDK) calls as child spans: ``OTEL_TRACES_EXPORTER=console``, and the tests' in-memory capture."""
    from azure.core.settings import settings as azure_settings
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(scrub_urls())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    azure_settings.tracing_implementation = "opentelemetry"
    _install_record_factory()


def reset_for_tests() -> None:
    """Forget that exporting was configured (the next ``configure`` looks again)."""
    global _configured
    with _configure_lock:
        _configured = False
