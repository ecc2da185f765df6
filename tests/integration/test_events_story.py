"""Issue 14: the whole story once, with Enrollio's events endpoint down for the first deliveries, and its telemetry
captured as it would be exported: connect, send, the contact's reply, an oversized reply, a revoked grant,
disconnect. Enrollio receives exactly the six events, each verified with the reference Standard Webhooks library,
each once; no log line or span holds a token, secret, subject, body or address; one notification's spans share
one trace, whose id is the correlation id on the stored row and in the event."""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.azurite import Azurite
from devtools.enrollio_receiver import EnrollioReceiver, Received, new_secret
from devtools.stack import Stack, offline_stack
from sync_core import delivery, names, telemetry
from tests.integration.test_inbound import CONTACT, deliver, skips, wait_for_messages
from tests.metrics import delta, totals
from tests.polling import wait_until

MIB = 1024 * 1024
SUBJECT = "Trial class on Monday (story 14)"
REPLY_TEXT = "Great, see you then (a body nobody logs)"
BIG_TEXT = "Here is the recital video (another body)"
DOWN_FOR = 4  # the receiver answers 503 to the first four deliveries: the first events wait and retry


# The Graph + identity emulator serves in this process too, and logs its request lines through werkzeug like the local
# host: those are Microsoft's side (its sign-in page receives login_hint), not this app's. The app's are under /api/.
_EMULATOR_REQUEST_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*[A-Z]+ /(?!api/)')


class Capture(logging.Handler):
    """Every log record of the process at INFO and above, but the emulator's request lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "werkzeug" and _EMULATOR_REQUEST_LINE.search(record.getMessage()):
            return
        self.records.append(record)

    def lines(self) -> list[str]:
        out = []
        for record in self.records:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            out.append(f"{record.name}: {text}")
        return out


@dataclass
class Story:
    stack: Stack
    receiver: EnrollioReceiver
    user_id: str
    mailbox: str
    connection_id: str
    sent: dict[str, Any]
    reply_key: str
    idempotency_key: str
    spans: list[ReadableSpan]
    logs: list[str]
    log_records: list[logging.LogRecord]
    secrets: dict[str, str]
    tokens: list[str]
    metrics: dict[str, dict[tuple[tuple[str, str], ...], int]]


@pytest.fixture(scope="module")
def story(
    azurite: Azurite, tmp_path_factory: pytest.TempPathFactory, metric_reader: InMemoryMetricReader
) -> Iterator[Story]:
    exporter = InMemorySpanExporter()
    telemetry.export_spans(exporter)  # what configure does for OTEL_TRACES_EXPORTER=console, into memory
    capture = Capture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)  # what Application Insights receives by default
    secret = new_secret()
    patch = pytest.MonkeyPatch()
    patch.setattr(delivery, "FIRST_RETRY_SECONDS", 1.0)  # the back-off's shape, in seconds rather than minutes
    try:
        with (
            EnrollioReceiver(secret, down_for=DOWN_FOR) as receiver,
            offline_stack(
                azurite,
                tmp_path_factory.mktemp("story14"),
                GRAPH_RETRY_BUDGET_SECONDS="3",
                ENROLLIO_EVENTS_URL=receiver.url,
                ENROLLIO_EVENTS_SECRET=secret,
            ) as stack,
        ):
            before = totals(metric_reader)
            told = _run(stack, receiver, exporter, capture, secret)
            told.metrics = delta(before, totals(metric_reader))
            yield told
    finally:
        patch.undo()
        root.removeHandler(capture)
        root.setLevel(previous_level)
        _stop_exporting(exporter)


def _stop_exporting(exporter: InMemorySpanExporter) -> None:
    """The process's tracer provider stays (OpenTelemetry sets one per process); later tests' spans go nowhere."""
    from azure.core.settings import settings as azure_settings
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().uninstrument()
    azure_settings.tracing_implementation = None
    exporter.clear()
    exporter.shutdown()


def _run(
    stack: Stack, receiver: EnrollioReceiver, exporter: InMemorySpanExporter, capture: Capture, secret: str
) -> Story:
    user_id = f"user-{uuid.uuid4().hex[:10]}"
    mailbox = stack.new_mailbox("story14")
    # 1. connect
    connection_id = stack.connect(user_id, mailbox)["connection_id"]
    # 2. send from Enrollio
    key = uuid.uuid4().hex
    body = {
        "user_id": user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": CONTACT, "name": "Pat Parent"},
        "subject": SUBJECT,
        "html": "<p>See you Monday at 5pm!</p>",
        # 4 MB: sent through an upload session, whose uploadUrl carries ?authtoken= (CONTRACT.md section 5)
        "attachments": [
            {
                "name": "timetable.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(b"%PDF-1.4 " + b"t" * (4 * MIB)).decode(),
            }
        ],
    }
    response = stack.enrollio.call("POST", "/api/send", body=body, headers={"Idempotency-Key": key})
    assert response.status_code == 200, response.text
    sent = dict(response.json())
    # 3. the contact replies with a small attachment
    form = base64.b64encode(b"%PDF-1.4 signed form").decode()
    deliver(
        stack,
        mailbox,
        subject="RE: " + SUBJECT,
        in_reply_to=sent["internet_message_id"],
        body_text=REPLY_TEXT,
        attachments=[{"kind": "file", "name": "form.pdf", "content_type": "application/pdf", "content_base64": form}],
    )
    [_, reply] = wait_for_messages(stack, user_id, sent["thread_id"], 2)
    # 4. the contact replies with an attachment far over the cap
    big = {"kind": "file", "name": "recital.mp4", "size": 4 * MIB}
    deliver(
        stack, mailbox, subject="RE: " + SUBJECT, in_reply_to=sent["internet_message_id"], body_text=BIG_TEXT,
        attachments=[big],
    )  # fmt: skip
    wait_until(lambda: skips(stack, user_id), what="the oversized reply's skip row")
    # 5. the grant is revoked (Graph tells the lifecycle endpoint; the next token refresh fails)
    found = stack.world.mailbox(mailbox)
    assert found is not None
    stack.emulator.identity.revoke(found.id)
    stack.emulator.identity.expire_access_tokens(found.id)
    wait_until(lambda: _status(stack, user_id) == "needs_reconnect", what="needs_reconnect")
    # 6. disconnect
    gone = stack.enrollio.call(
        "POST", "/api/outlook/disconnect", body={"user_id": user_id, "connection_id": connection_id}
    )
    assert gone.status_code == 200, gone.text

    wait_until(lambda: len(receiver.by_id()) >= 6, what="six events at Enrollio", timeout=90)
    stack.settle()
    identity = stack.emulator.identity._store
    tokens = [*identity.access, *identity.refresh, *identity.codes]
    settings = stack.settings
    secrets_used = {
        "GRAPH_CLIENT_SECRET": settings.graph_client_secret.get_secret_value(),
        "ENROLLIO_SHARED_SECRET": settings.enrollio_shared_secret.get_secret_value(),
        "TOKEN_ENCRYPTION_KEYS": settings.token_encryption_keys.get_secret_value().split(":", 1)[1],
        "ENROLLIO_EVENTS_SECRET": secret.removeprefix("whsec_"),
    }
    return Story(
        stack, receiver, user_id, mailbox, connection_id, sent, reply["message_key"], key,
        _app_spans(list(exporter.get_finished_spans())), capture.lines(), list(capture.records), secrets_used, tokens,
        {},
    )  # fmt: skip


def _app_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The spans of the app's traces: each begins in one of its operations (sync_core.telemetry). The test's own
    HTTP calls (Enrollio, the browser, the emulator's control endpoints) are instrumented too, in traces of their
    own, as is the local host's queue polling (the Functions host's work in Azure, not the app's)."""
    ours = {
        s.context.trace_id for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == "sync_core"
    }
    return [s for s in spans if s.context is not None and s.context.trace_id in ours]


def _status(stack: Stack, user_id: str) -> str:
    connections = stack.enrollio.call("GET", f"/api/users/{user_id}/connections").json()["connections"]
    return str(connections[0]["status"]) if connections else ""


def _events(story: Story) -> dict[str, Received]:
    return {event.type: event for events in story.receiver.by_id().values() for event in events}


# -- Enrollio's side -------------------------------------------------------------------------------------------


def test_enrollio_receives_exactly_the_six_events_each_verified_and_each_once(story: Story) -> None:
    by_id = story.receiver.by_id()
    assert sorted(e.type for deliveries in by_id.values() for e in deliveries) == sorted(
        [
            "connection.connected",
            "message.sent",
            "message.synced",
            "message.skipped",
            "connection.needs_reconnect",
            "connection.disconnected",
        ]
    )
    assert {webhook_id: len(deliveries) for webhook_id, deliveries in by_id.items()} == dict.fromkeys(by_id, 1)
    assert all(webhook_id.startswith("evt_") for webhook_id in by_id)
    # The receiver was down for the first deliveries; every event arrived all the same, and every one verified.
    assert story.receiver.refused_as_down == DOWN_FOR
    assert story.receiver.unverified == 0
    outbox = story.stack.services.storage.tables.get_table_client(names.TABLE_OUTBOX)
    assert list(outbox.list_entities()) == []  # nothing left undelivered


def test_each_event_names_its_fact_by_ids_reasons_and_sizes(story: Story) -> None:
    events = _events(story)
    user, cid, thread = story.user_id, story.connection_id, story.sent["thread_id"]
    base = {"user_id": user, "account_id": "acct-1", "connection_id": cid}
    assert events["connection.connected"].data == {**base, "status": "connected", "active": True}
    assert events["message.sent"].data == {
        **base,
        "thread_id": thread,
        "message_key": _key(story.sent["internet_message_id"]),
        "idempotency_key": story.idempotency_key,
    }
    assert events["message.synced"].data == {
        **base,
        "thread_id": thread,
        "message_key": story.reply_key,
        "direction": "inbound",
        "attachments": 1,
        "attachment_bytes": len(b"%PDF-1.4 signed form"),
    }
    skipped = events["message.skipped"].data
    [over] = skipped.pop("over_cap")
    assert skipped == {**base, "thread_id": thread, "message_key": skipped["message_key"], "direction": "inbound",
                       "reason": "attachment_too_large"}  # fmt: skip
    assert over["cap"] == 3 * MIB and over["graph_size"] > 4 * MIB
    assert skipped["message_key"] != story.reply_key
    assert events["connection.needs_reconnect"].data == {
        **base, "status": "needs_reconnect", "active": True, "reason": "invalid_grant"
    }  # fmt: skip
    assert events["connection.disconnected"].data == {**base, "status": "disconnected", "active": False}


def _key(internet_message_id: str) -> str:
    from sync_core.threads import key_of

    return key_of(internet_message_id)


# -- Telemetry ----------------------------------------------------------------------------------------------------


def _forbidden(story: Story) -> dict[str, str]:
    """Every value that must never reach a log line or a span, by what it is."""
    forbidden = {f"secret {name}": value for name, value in story.secrets.items()}
    forbidden |= {f"token {i}": token for i, token in enumerate(story.tokens)}
    for address in (story.mailbox, CONTACT):
        forbidden[f"address {address}"] = address
        forbidden[f"address {address} (in a URL)"] = quote(address, safe="")
    forbidden |= {"subject": SUBJECT, "body": REPLY_TEXT, "other body": BIG_TEXT, "sent body": "See you Monday at 5pm"}
    forbidden["an upload session's token"] = "authtoken="
    return forbidden


def _span_texts(spans: list[ReadableSpan]) -> list[str]:
    texts = []
    for span in spans:
        texts.append(f"span {span.name}: {dict(span.attributes or {})}")
        texts += [f"span {span.name} event {e.name}: {dict(e.attributes or {})}" for e in span.events]
        if span.status.description:
            texts.append(f"span {span.name} status: {span.status.description}")
    return texts


def test_no_log_line_or_span_of_the_whole_story_holds_a_token_secret_subject_body_or_address(story: Story) -> None:
    assert len(story.tokens) >= 2 and len(story.logs) > 20 and len(story.spans) > 50  # the capture saw the story
    uploads = [s for s in story.spans if "AttachmentSessions(" in str((s.attributes or {}).get("http.url", ""))]
    assert uploads  # the send's upload session PUTs are in the capture
    # What the app writes. The host's request lines are the host's: Azure's records each request's URL whole (the
    # connect link's login_hint, an address: README, known limitations); the local host's redaction is tested below,
    # and must not be what makes this pass.
    app_lines = [line for line in story.logs if not line.startswith("werkzeug: ")]
    texts = app_lines + _span_texts(story.spans)
    leaks = {
        what: next(t for t in texts if value in t)[:300]
        for what, value in _forbidden(story).items()
        if any(value in t for t in texts)
    }
    assert leaks == {}


def test_one_notifications_spans_share_one_trace_whose_id_is_the_rows_and_the_events_correlation_id(
    story: Story,
) -> None:
    synced = _events(story)["message.synced"]
    cid = synced.correlation_id
    assert cid is not None and len(cid) == 32
    trace = [s for s in story.spans if s.context is not None and s.context.trace_id == int(cid, 16)]
    names_in_trace = {s.name for s in trace}
    # The webhook request that was notified, the worker's sync of that message, its Graph and Storage calls, and the
    # delivery of its event: one trace.
    assert "POST /api/graph/notifications" in names_in_trace
    assert "sync message" in names_in_trace and "deliver event" in names_in_trace
    urls = [str((s.attributes or {}).get("http.url") or (s.attributes or {}).get("url.full") or "") for s in trace]
    assert any("/v1.0/users/" in u and "/messages/" in u for u in urls), urls  # Graph, as a dependency
    assert any("/devstoreaccount1/Messages" in u for u in urls), urls  # Storage, as a dependency
    assert any(u.startswith(story.receiver.url) for u in urls), urls  # the event's POST to Enrollio
    # The same id on the stored row.
    messages = story.stack.services.storage.tables.get_table_client(names.TABLE_MESSAGES)
    row = messages.get_entity(story.sent["thread_id"], story.reply_key)
    assert row["CorrelationId"] == cid
    # The log lines of that path carry it: the notification's intake, the message's sync, its event's delivery.
    path = {r.name for r in story.log_records if getattr(r, "correlation_id", "-") == cid}
    assert {"sync_core.intake", "sync_core.inbound", "sync_core.delivery"} <= path


def test_every_log_line_the_app_wrote_in_the_story_carries_its_paths_correlation_id(story: Story) -> None:
    app = [r for r in story.log_records if r.name.startswith("sync_core")]
    assert len(app) >= 15  # intake, each message's sync, each delivery attempt
    assert [f"{r.name}: {r.getMessage()}" for r in app if getattr(r, "correlation_id", "-") == "-"] == []


def test_the_connect_links_address_is_redacted_from_the_local_hosts_request_lines(story: Story) -> None:
    lines = [line for line in story.logs if "/api/outlook/connect?" in line]
    assert lines and all("login_hint=REDACTED" in line for line in lines)


def test_the_storys_metrics_count_notifications_messages_by_outcome_and_reason_the_lag_and_deliveries(
    story: Story,
) -> None:
    metrics = story.metrics
    assert set(metrics["sync.notifications"]) == {(("outcome", "accepted"),)}  # none refused
    assert metrics["sync.notifications"][(("outcome", "accepted"),)] >= 2  # the reply and the oversized one
    messages = metrics["sync.messages"]
    assert messages[(("outcome", "stored"), ("reason", ""))] == 1
    assert messages[(("outcome", "skipped"), ("reason", "attachment_too_large"))] == 1
    assert metrics["sync.end_to_end_lag"] == {(): 1}  # one message stored: one lag recorded
    deliveries = metrics["sync.events"]
    delivered = {dict(a)["type"]: n for a, n in deliveries.items() if dict(a)["outcome"] == "delivered"}
    assert delivered == dict.fromkeys(
        ["connection.connected", "message.sent", "message.synced", "message.skipped", "connection.needs_reconnect",
         "connection.disconnected"], 1,
    )  # fmt: skip
    assert sum(n for a, n in deliveries.items() if dict(a)["outcome"] == "retry") == DOWN_FOR


def test_a_sends_row_and_a_lifecycle_notifications_worker_carry_their_paths_correlation_id(story: Story) -> None:
    sent = _events(story)["message.sent"]
    messages = story.stack.services.storage.tables.get_table_client(names.TABLE_MESSAGES)
    row = messages.get_entity(story.sent["thread_id"], _key(story.sent["internet_message_id"]))
    assert sent.correlation_id and row["CorrelationId"] == sent.correlation_id  # the send's row, as its event
    # The revoked grant's lifecycle notification: the webhook request and the lifecycle worker, one trace.
    workers = [s for s in story.spans if s.name == names.QUEUE_LIFECYCLE and s.context is not None]
    assert workers
    for worker in workers:
        trace = {s.name for s in story.spans if s.context is not None and s.context.trace_id == worker.context.trace_id}
        assert "POST /api/graph/lifecycle" in trace, trace
