"""The local Functions host: HTTP, queue and timer triggers served like ``func start``, against real Azurite.

The fixture apps live in ``tests/fixture_apps/``; ``tests/fixture_apps/host.json`` sets small queue limits
(batch 4, threshold 2, 3 dequeues, 1 s visibility, 0.5 s max polling) so retries and poisoning are quick.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from werkzeug.test import Client

from devtools.azurite import Azurite
from devtools.local_host import LocalHost
from devtools.local_host_config import (
    ConfigError,
    apply_values,
    connection_string,
    parse_timespan,
    read_host_json,
    read_local_settings,
)
from devtools.local_host_http import (
    HttpDispatcher,
    HttpRoute,
    RouteError,
    compile_route,
    host_url,
    route_ranges,
)
from devtools.local_host_queues import MIN_POLLING_INTERVAL, decode_body, next_polling_interval
from devtools.local_host_timers import ScheduleError, is_past_due, validate_ncrontab
from sync_core.settings import Settings
from tests.fixture_apps import demo_app, quiet_app
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixture_apps"
FIXTURE_HOST_JSON = FIXTURES / "host.json"
T = TypeVar("T")


# -- the demo app, served once for this module ---------------------------------------------------------


@pytest.fixture(scope="module")
def host(azurite: Azurite) -> Iterator[LocalHost]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AzureWebJobsStorage", azurite.connection_string)
        with LocalHost(
            "tests.fixture_apps.demo_app:app", host_json=FIXTURE_HOST_JSON, local_settings=None, port=0
        ) as running:
            yield running


@pytest.fixture(scope="module")
def events(azurite: Azurite) -> TableClient:
    return TableClient.from_connection_string(azurite.connection_string, demo_app.EVENTS_TABLE)


def rows(events: TableClient, kind: str, **equal: object) -> list[dict[str, Any]]:
    try:
        found = list(events.query_entities("PartitionKey eq @kind", parameters={"kind": kind}))
    except Exception:  # the table appears with the first event
        return []
    return [dict(r) for r in found if all(r.get(k) == v for k, v in equal.items())]


def queue(azurite: Azurite, name: str, *, base64_text: bool = True) -> QueueClient:
    policy = TextBase64EncodePolicy() if base64_text else None
    return QueueClient.from_connection_string(azurite.connection_string, name, message_encode_policy=policy)


def peeked_texts(client: QueueClient) -> list[str]:
    try:
        return [str(m.content) for m in client.peek_messages(max_messages=32)]
    except Exception:  # the poison queue appears with its first message
        return []


def test_http_trigger_gets_route_params_query_body_headers_and_its_response_is_returned(host: LocalHost) -> None:
    response = requests.post(f"{host.url}/api/items/42?color=red", data=b"hello", headers={"X-Trace": "t-1"})

    assert response.status_code == 201
    assert response.json() == {
        "item_id": "42",
        "query": {"color": "red"},
        "body": "hello",
        "trace": "t-1",
        "method": "POST",
    }
    assert response.headers["X-Echo"] == "yes"
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_http_unknown_route_wrong_method_and_a_failing_function(host: LocalHost) -> None:
    assert requests.get(f"{host.url}/api/nowhere").status_code == 404
    assert requests.get(f"{host.url}/items/42").status_code == 404  # no route prefix
    wrong = requests.delete(f"{host.url}/api/items/42")
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET, POST")
    failed = requests.get(f"{host.url}/api/boom")
    assert (failed.status_code, failed.content) == (500, b"")


def test_each_invocation_is_logged_like_the_functions_host(host: LocalHost, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devtools.local_host")

    requests.get(f"{host.url}/api/items/7")
    requests.get(f"{host.url}/api/boom")

    messages = [r.getMessage() for r in caplog.records if r.name == "devtools.local_host"]
    reason = "Reason='This function was programmatically called via the host APIs.'"
    assert any(m.startswith(f"Executing 'Functions.echo' ({reason}, Id=") for m in messages)
    assert any(m.startswith("Executed 'Functions.echo' (Succeeded, Id=") and m.endswith("ms)") for m in messages)
    assert any(m.startswith("Executed 'Functions.boom' (Failed, Id=") for m in messages)


def test_a_base64_queue_message_is_processed_once_and_deleted(
    host: LocalHost, azurite: Azurite, events: TableClient
) -> None:
    text = f"hello {uuid.uuid4()}"
    work = queue(azurite, demo_app.WORK_QUEUE)
    work.send_message(text)

    seen = wait_until(lambda: rows(events, "work", text=text), what="the work function to record the message")
    assert [r["dequeue_count"] for r in seen] == [1]
    wait_until(lambda: work.get_queue_properties().approximate_message_count == 0, what="the message's deletion")


def test_a_message_that_always_fails_is_tried_max_dequeue_count_times_then_poisoned(
    host: LocalHost, azurite: Azurite, events: TableClient
) -> None:
    text = f"fail {uuid.uuid4()}"
    queue(azurite, demo_app.WORK_QUEUE).send_message(text)
    poison = queue(azurite, demo_app.WORK_QUEUE + "-poison")
    encoded = base64.b64encode(text.encode()).decode()

    wait_until(lambda: encoded in peeked_texts(poison), what="the message in the poison queue")

    attempts = sorted(rows(events, "work", text=text), key=lambda r: r["dequeue_count"])
    assert [r["dequeue_count"] for r in attempts] == [1, 2, 3]  # maxDequeueCount 3 in the fixture host.json
    # Each retry waited for visibilityTimeout (1 s) after the failure before the message was visible again.
    gaps = [(b["at"] - a["at"]).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    assert encoded not in peeked_texts(queue(azurite, demo_app.WORK_QUEUE))


def test_message_text_that_is_not_base64_is_poisoned_without_running_the_function(
    host: LocalHost, azurite: Azurite, events: TableClient
) -> None:
    text = f"not base64 {uuid.uuid4()}!"
    queue(azurite, demo_app.WORK_QUEUE, base64_text=False).send_message(text)
    poison = queue(azurite, demo_app.WORK_QUEUE + "-poison")

    wait_until(lambda: text in peeked_texts(poison), what="the undecodable message in the poison queue")
    assert rows(events, "work", text=text) == []


def test_a_new_batch_is_fetched_only_when_running_messages_drop_to_the_threshold(
    host: LocalHost, azurite: Azurite, events: TableClient
) -> None:
    held = queue(azurite, demo_app.GATE_QUEUE)
    texts = [f"held {i} {uuid.uuid4()}" for i in range(10)]
    for text in texts:
        held.send_message(text)
    try:
        # Settled: every message the host took is running, and with more than newBatchThreshold (2) running
        # it takes no more.
        def settled() -> int:
            running = demo_app.gauge["running"]
            return running if running > 2 and running + len(peeked_texts(held)) == len(texts) else 0

        running = wait_until(settled, what="the first batches to be running")
        assert running <= 4 + 2  # batchSize + newBatchThreshold
    finally:
        demo_app.gate.set()
    wait_until(lambda: {r["text"] for r in rows(events, "held")} >= set(texts), what="every held message")
    assert demo_app.gauge["most"] <= 4 + 2


def test_timers_fire_on_their_ncrontab_schedule_and_on_startup(host: LocalHost, events: TableClient) -> None:
    ticks = wait_until(lambda: len(rows(events, "tick")) >= 2 and rows(events, "tick"), what="two ticks")
    assert all(r["past_due"] is False for r in ticks)
    # "0 0 0 1 1 *" is due on 1 January only: its single run is run_on_startup's.
    assert [r["past_due"] for r in rows(events, "yearly")] == [False]


# -- start and stop -------------------------------------------------------------------------------------


def test_stop_ends_every_thread_and_closes_the_port(azurite: Azurite) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AzureWebJobsStorage", azurite.connection_string)
        host = LocalHost("tests.fixture_apps.quiet_app:app", host_json=FIXTURE_HOST_JSON, local_settings=None, port=0)
        host.start()
        url, port = host.url, int(host.url.rsplit(":", 1)[1])
        assert requests.get(f"{url}/api/ping").text == "pong"
        wait_until(quiet_app.ticked.is_set, what="the quiet timer to fire")

        host.stop()

    ours = [t.name for t in threading.enumerate() if "quiet_" in t.name or t.name == f"local-host-http-{port}"]
    assert ours == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_host_without_timers_serves_and_polls_but_never_fires_a_timer(azurite: Azurite) -> None:
    """``--no-timers``: a benchmark's extra instance, whose quarter-hour catch-up would land in its measurement."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AzureWebJobsStorage", azurite.connection_string)
        quiet_app.ticked.clear()
        app = "tests.fixture_apps.quiet_app:app"
        host = LocalHost(app, host_json=FIXTURE_HOST_JSON, local_settings=None, port=0, run_timers=False)
        with host:
            assert requests.get(f"{host.url}/api/ping").text == "pong"
            assert [listener.function.function_name for listener in host.listeners] == ["quiet_queue"]
            time.sleep(2.5)  # the timer is due every second

    assert not quiet_app.ticked.is_set()


def test_a_function_with_a_binding_the_host_does_not_emulate_fails_to_load() -> None:
    host = LocalHost("tests.fixture_apps.output_binding_app:app", host_json=FIXTURE_HOST_JSON, local_settings=None)
    with pytest.raises(ConfigError, match=r"Functions\.enqueue: binding 'queue' \('out'\) is not emulated"):
        host.start()


def test_a_queue_trigger_whose_connection_setting_is_missing_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    host = LocalHost("tests.fixture_apps.quiet_app:app", host_json=FIXTURE_HOST_JSON, local_settings=None, port=0)
    with pytest.raises(ConfigError, match=r"Functions\.quiet_queue: connection setting 'Storage'"):
        host.start()


# -- routes (no sockets: werkzeug's test client) -------------------------------------------------------


def route(name: str, template: str, methods: set[str] | None = None, urls: list[str] | None = None) -> HttpRoute:
    pattern, parameters = compile_route(name, template)

    def answer(req: Any) -> str:
        if urls is not None:
            urls.append(req.url)
        return f"{name} {dict(req.route_params)}"

    methods_allowed = frozenset(methods) if methods else None
    return HttpRoute(name, template, methods_allowed, pattern, parameters, "req", answer, route_ranges(template))


def test_route_templates_parameters_constraints_optional_and_catch_all() -> None:
    app = Client(
        HttpDispatcher(
            [
                route("by_id", "items/{id:int}", {"GET"}),
                route("new", "items/new", {"GET"}),
                route("folder", "users/{user_id}/mail/{folder?}"),
                route("files", "files/{*path}"),
            ],
            "api",
        )
    )

    assert app.get("/api/items/12").text == "by_id {'id': '12'}"
    assert app.get("/api/Items/NEW").text == "new {}"  # literal beats parameter; case-insensitive
    assert app.get("/api/items/x").status_code == 404  # int constraint
    assert app.get("/api/users/u1/mail").text == "folder {'user_id': 'u1'}"
    assert app.get("/api/users/u1/mail/inbox").text == "folder {'user_id': 'u1', 'folder': 'inbox'}"
    assert app.get("/api/files/a/b/c.txt").text == "files {'path': 'a/b/c.txt'}"


@pytest.mark.parametrize(
    ("sent", "url"),
    [
        # Azure: the path decoded (but %2F) and re-escaped by PathString, the query exactly as sent
        ("/api/users/a%20b/skips?user_id=a%2Bb%40x.com", "http://h/api/users/a%20b/skips?user_id=a%2Bb%40x.com"),
        ("/api/users/a%27b%40c/skips", "http://h/api/users/a'b@c/skips"),
        ("/api/users/%c3%a9/skips?q=%C3%A9+x", "http://h/api/users/%C3%A9/skips?q=%C3%A9+x"),
        ("/api/users/a%2fb/skips", "http://h/api/users/a%2fb/skips"),
        ("/api/users/%25/skips", "http://h/api/users/%25/skips"),
    ],
)
def test_a_function_gets_the_url_as_azures_host_rebuilds_it_not_werkzeugs_iri(sent: str, url: str) -> None:
    """Review of i12, finding 4: werkzeug's request.url decodes escapes; a signature check saw another URL here."""
    assert host_url("http", "h", sent) == url
    seen: list[str] = []
    app = Client(HttpDispatcher([route("any", "{*rest}", None, seen)], "api"))
    assert app.get(sent).status_code == 200
    assert seen == [url.replace("http://h", "http://localhost")]


def test_int_and_long_route_constraints_hold_the_values_dotnet_parses_into_int32_and_int64() -> None:
    """ASP.NET's IntRouteConstraint matches what int.TryParse reads (InvariantCulture): ASCII digits with an optional
    sign, within int32 (long: int64). The local host took any digits, so 5,000 of them reached int() (a 500 where
    Azure answers 404). Review of i12, finding 7."""
    app = Client(HttpDispatcher([route("by_id", "items/{id:int}"), route("big", "big/{id:long}")], "api"))
    for fits in ("0", "2147483647", "-2147483648", "+5", "007"):
        assert app.get(f"/api/items/{fits}").status_code == 200, fits
    for beyond in ("2147483648", "-2147483649", "9" * 5000, "0" * 30 + "1" * 11, "%D9%A3", "1.0", "--1", "0x1"):
        assert app.get(f"/api/items/{beyond}").status_code == 404, beyond[:20]
    assert app.get("/api/big/9223372036854775807").status_code == 200
    assert app.get("/api/big/9223372036854775808").status_code == 404


def test_route_templates_the_host_cannot_serve_are_refused_with_the_function_name() -> None:
    with pytest.raises(RouteError, match=r"Functions\.f: route 'a/file\.\{ext\}'"):
        compile_route("f", "a/file.{ext}")
    with pytest.raises(RouteError, match="constraint 'regex' is not supported"):
        compile_route("f", "a/{x:regex}")
    with pytest.raises(RouteError, match="must be the last segment"):
        compile_route("f", "a/{*rest}/b")


# -- host.json, local.settings.json, schedules, polling (pure) -------------------------------------------


def test_the_repository_host_json_queue_options_are_read() -> None:
    options = read_host_json(ROOT / "host.json")
    assert options.route_prefix == "api"
    q = options.queues
    assert (q.batch_size, q.new_batch_threshold, q.max_dequeue_count) == (16, 8, 5)
    assert (q.visibility_timeout, q.max_polling_interval, q.message_encoding) == (10.0, 2.0, "base64")


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"batchSize": 64}, r"host\.json extensions\.queues\.batchSize: 64 is not an integer 1\.\.32"),
        ({"visibilityTimeout": "10s"}, r"host\.json extensions\.queues\.visibilityTimeout: '10s' is not a TimeSpan"),
        ({"messageEncoding": "utf8"}, r"extensions\.queues\.messageEncoding: 'utf8' is not 'base64' or 'none'"),
        ({"maxPollingInterval": "00:00:00.010"}, r"maxPollingInterval: must be at least 00:00:00\.100"),
    ],
)
def test_bad_host_json_queue_options_name_the_field(tmp_path: Path, queues: dict[str, Any], message: str) -> None:
    path = tmp_path / "host.json"
    path.write_text(f'{{"version": "2.0", "extensions": {{"queues": {json.dumps(queues)}}}}}')
    with pytest.raises(ConfigError, match=message):
        read_host_json(path)


def test_timespans() -> None:
    assert parse_timespan("00:00:10", "f") == 10
    assert parse_timespan("00:00:00.500", "f") == 0.5
    assert parse_timespan("1.02:03:04", "f") == 86400 + 2 * 3600 + 3 * 60 + 4


def test_local_settings_values_fill_the_environment_but_an_explicit_variable_wins(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(
        '{"IsEncrypted": false, "Values": {"A": "from-file", "B": "from-file"}, "Host": {"LocalHttpPort": 7099}}'
    )
    settings = read_local_settings(path)
    environ = {"A": "explicit"}

    assert apply_values(settings.values, environ) == ["B"]
    assert environ == {"A": "explicit", "B": "from-file"}
    assert settings.http_port == 7099


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"IsEncrypted": true, "Values": {}}', "IsEncrypted"),
        ('{"Values": {"PORT": 7071}}', r"Values\.PORT: every value must be a string"),
        ('{"Values": {}, "Host": {"LocalHttpPort": "x"}}', r"Host\.LocalHttpPort"),
    ],
)
def test_bad_local_settings_name_the_field(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(document)
    with pytest.raises(ConfigError, match=message):
        read_local_settings(path)


def test_a_trigger_connection_resolves_the_setting_or_its_azurewebjobs_prefixed_form() -> None:
    assert connection_string("Storage", {"AzureWebJobsStorage": "cs"}, "f") == "cs"
    assert connection_string("Other", {"Other": "cs2", "AzureWebJobsOther": "no"}, "f") == "cs2"
    with pytest.raises(ConfigError, match=r"Functions\.f: connection setting 'Missing' is not set"):
        connection_string("Missing", {}, "f")


def test_schedules_must_be_six_field_ncrontab() -> None:
    assert validate_ncrontab("t", "0 */5 * * * *") == "0 */5 * * * *"
    with pytest.raises(ScheduleError, match=r"Functions\.t: schedule '\*/5 \* \* \* \*' is not a six-field"):
        validate_ncrontab("t", "*/5 * * * *")
    with pytest.raises(ScheduleError, match=r"Functions\.t: schedule '00:05:00'"):
        validate_ncrontab("t", "00:05:00")  # TimeSpan form: App Service plans only


def test_a_run_is_past_due_only_when_the_following_occurrence_has_also_passed() -> None:
    due = dt.datetime(2025, 1, 1, 0, 5, tzinfo=dt.UTC)
    every_five_minutes = "0 */5 * * * *"
    assert not is_past_due(every_five_minutes, due, due + dt.timedelta(seconds=3))
    assert is_past_due(every_five_minutes, due, due + dt.timedelta(minutes=5))


def test_polling_backs_off_while_empty_up_to_the_maximum_and_resets_on_a_message() -> None:
    waits = [MIN_POLLING_INTERVAL]
    for _ in range(5):
        waits.append(next_polling_interval(waits[-1], found_messages=False, maximum=1.0))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert next_polling_interval(1.0, found_messages=True, maximum=1.0) == MIN_POLLING_INTERVAL


def test_message_bodies_decode_per_message_encoding() -> None:
    assert decode_body(base64.b64encode(b"\x00hi").decode(), "base64") == b"\x00hi"
    assert decode_body("plain", "none") == b"plain"
    with pytest.raises(ValueError, match="not base64"):
        decode_body("plain text!", "base64")


def test_the_standalone_host_creates_the_apps_storage_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m devtools.local_host`` against an empty Azurite: every queue, table and container the app uses
    exists before its first request (``make run`` and Bicep create them too)."""
    from devtools.local_host import create_app_storage
    from sync_core import names
    from sync_core.adapters.storage import StorageClients
    from tests.conftest import make_settings

    with Azurite() as empty:
        settings = make_settings(empty.connection_string)
        values = _plain(settings)
        path = tmp_path / "local.settings.json"
        path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        for key in values:  # the environment is restored afterwards: these are the file's to set
            monkeypatch.setenv(key, "placeholder")
            monkeypatch.delenv(key)
        create_app_storage(path)
        clients = StorageClients(settings)
        assert set(names.TABLES) <= {t.name for t in clients.tables.list_tables()}
        assert set(names.CONTAINERS) <= {c.name for c in clients.blobs.list_containers()}
        for queue in names.QUEUES:
            clients.queue(queue).get_queue_properties()  # raises if it does not exist


def _plain(settings: Settings) -> dict[str, str]:
    """Settings as the environment variables that produce them (secrets revealed)."""
    out = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is not None:
            out[field.alias or name] = str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    return out


class _Started(Exception):
    """Raised by the stand-in host once it has seen how ``main`` configured it."""


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("http://127.0.0.1:7071", "https://localhost:7443"),  # local.settings.sample.json's, or a copy of it
        (None, "https://localhost:7443"),
        ("https://sync-dev.example.net", "https://sync-dev.example.net"),  # a tunnel: kept
    ],
)
def test_https_serves_what_public_base_url_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    configured: str | None,
    expected: str,
) -> None:
    """``--https`` with the sample's ``http://`` PUBLIC_BASE_URL gave the connect cookie no ``Secure``, and the
    browser dropped it: the URL the app builds its redirect and cookie from must be the one served."""
    import devtools.local_host as standalone

    values = {"PUBLIC_BASE_URL": configured} if configured else {}
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values, "Host": {"LocalHttpPort": 7443}}))
    monkeypatch.setenv("PUBLIC_BASE_URL", "placeholder")  # restored afterwards, whatever main sets
    monkeypatch.delenv("PUBLIC_BASE_URL")
    monkeypatch.setattr(standalone, "ROOT", tmp_path)  # the certificate goes to tmp_path/.run/local-host
    seen: dict[str, object] = {}

    class Host:
        def __init__(self, app: str, **options: object) -> None:
            seen.update(options)

        def __enter__(self) -> None:
            apply_values(read_local_settings(settings).values)  # as LocalHost.start does: a set variable wins
            seen["PUBLIC_BASE_URL"] = os.environ.get("PUBLIC_BASE_URL")
            raise _Started

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(standalone, "LocalHost", Host)
    with pytest.raises(_Started):
        standalone.main(["--https", "--settings", str(settings), "--no-create-storage"])

    assert seen["PUBLIC_BASE_URL"] == expected
    assert (seen["port"], seen["public_host"]) == (7443, "localhost")
    assert (seen["PUBLIC_BASE_URL"] != configured) == ("the app uses https://localhost:7443" in caplog.text)
