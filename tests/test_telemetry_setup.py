"""How telemetry is set up in a process (each case in a fresh interpreter: OpenTelemetry's providers are set once per
process): nothing heavy at import (cold start), the Azure Monitor distro only with a connection string, the console
exporter when asked, the correlation id on log lines either way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


SETUP = """
import logging, sys
from sync_core import telemetry
from tests.conftest import make_settings
settings = make_settings("UseDevelopmentStorage=true", {overrides})
"""


def test_importing_the_function_app_loads_neither_the_sdk_nor_the_azure_monitor_distro() -> None:
    out = _python("""
        import sys
        import function_app
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "azure.monitor"))))
    """)
    assert out.strip() == "[]"


def test_console_exporter_when_asked_prints_each_span_with_its_trace_and_logs_carry_that_id() -> None:
    out = _python(
        SETUP.format(overrides='OTEL_TRACES_EXPORTER="console"')
        + """
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(correlation_id)s %(message)s")
telemetry.configure(settings)
with telemetry.operation("sync message", "0af7651916cd43dd8448eb211c80319c", **{"sync.outcome": "stored"}):
    logging.getLogger("sync_core.inbound").info("stored")
print("azure monitor loaded:", "azure.monitor.opentelemetry" in sys.modules)
"""
    )
    assert "LOG 0af7651916cd43dd8448eb211c80319c stored" in out
    span = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert span["name"] == "sync message"
    assert span["context"]["trace_id"] == "0x0af7651916cd43dd8448eb211c80319c"
    assert span["attributes"] == {"sync.outcome": "stored"}
    assert "azure monitor loaded: False" in out


def test_without_a_connection_string_or_exporter_nothing_is_exported_but_logs_carry_the_correlation_id() -> None:
    out = _python(
        SETUP.format(overrides="")
        + """
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(correlation_id)s %(message)s")
telemetry.configure(settings)
with telemetry.operation("POST /api/graph/notifications"):
    logging.getLogger("sync_core.intake").info("accepted")
    print("cid", telemetry.correlation_id(), "client-request-id", telemetry.client_request_id())
logging.getLogger("sync_core.functions").info("outside")
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "azure.monitor"))))
"""
    )
    cid = out.split("cid ", 1)[1].split()[0]
    assert len(cid) == 32 and f"LOG {cid} accepted" in out and "LOG - outside" in out
    request_id = out.split("client-request-id ", 1)[1].split()[0]
    assert request_id.replace("-", "") == cid and len(request_id) == 36  # a GUID, as Graph's header takes it
    assert out.strip().endswith("[]")


def test_with_a_connection_string_the_azure_monitor_distro_exports_spans_and_the_app_loggers() -> None:
    # An ingestion endpoint nobody listens on: the exporter is set up, nothing leaves the machine.
    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
    out = _python(
        SETUP.format(overrides=f'APPLICATIONINSIGHTS_CONNECTION_STRING="{connection}"')
        + """
import os
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"
telemetry.configure(settings)
from opentelemetry import trace
print("provider", type(trace.get_tracer_provider()).__module__)
print("distro", "azure.monitor.opentelemetry" in sys.modules)
handlers = [type(h).__name__ for h in logging.getLogger("sync_core").handlers]
print("handlers", handlers)
print("credential", telemetry.azure_monitor_credential("ClientId=abc;Authorization=AAD").__class__.__name__,
      telemetry.azure_monitor_credential(None))
""",
        timeout=120,
    )
    assert "provider opentelemetry.sdk.trace" in out
    assert "distro True" in out
    assert "LoggingHandler" in out.split("handlers", 1)[1].splitlines()[0]
    assert "credential ManagedIdentityCredential None" in out


def test_an_upload_sessions_authtoken_and_a_filters_address_never_reach_a_span() -> None:
    # Graph's uploadUrl is pre-authenticated (?authtoken=…, CONTRACT.md section 5); a $filter may name an address.
    out = _python(
        SETUP.format(overrides="")
        + """
import http.server, json, threading
import requests
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

class Ok(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_PUT
    def log_message(self, *args): pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=server.serve_forever, daemon=True).start()
exporter = InMemorySpanExporter()
telemetry.export_spans(exporter)
base = f"http://127.0.0.1:{server.server_port}"
with telemetry.operation("send"):
    requests.put(base + "/api/v2.0/Users('o@t')/AttachmentSessions('s')?authtoken=eyJSECRETTOKEN", data=b"x" * 10,
                 headers={"Content-Range": "bytes 0-9/10"})
    requests.get(base + "/v1.0/me/messages?$filter=from/emailAddress/address eq 'pat@home.example'#frag")
print(json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()]))
"""
    )
    spans = json.loads(out.strip().splitlines()[-1])
    urls = sorted(str(s.get("http.url") or s.get("url.full")) for s in spans if s.get("http.url") or s.get("url.full"))
    assert len(urls) == 2 and all(u.endswith(("/AttachmentSessions('s')", "/me/messages")) for u in urls), urls
    text = json.dumps(spans)
    assert "eyJSECRETTOKEN" not in text and "pat@home.example" not in text
