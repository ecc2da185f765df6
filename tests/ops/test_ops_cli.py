"""``python -m sync_core.ops`` against Azurite: status shows what is stored; resync and replay-poison act."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import sys
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.storage.queue import QueueClient

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, MailboxStore, SubscriptionStore
from sync_core.adapters.ops_store import FailureStore
from sync_core.adapters.outbox_store import Fact, OutboxStore
from sync_core.adapters.storage import StorageClients
from sync_core.adapters.thread_store import MessageStore
from sync_core.connections import Connection, Status, mailbox_key
from sync_core.failures import Transient
from sync_core.matching import Direction
from sync_core.ops import actions, overview
from sync_core.ops.cli import main
from sync_core.ops.context import OpsContext, gather_values
from sync_core.subscriptions import Subscription
from sync_core.threads import SkipRecord

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # set again as each test starts: the CLI reads the real clock


@pytest.fixture(autouse=True)
def now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "NOW", dt.datetime.now(dt.UTC).replace(microsecond=0))


Env = tuple[dict[str, str], StorageClients]


def run(capsys: pytest.CaptureFixture[str], environ: dict[str, str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv), environ=environ)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def connection(user: str, cid: str, address: str, status: Status, active: bool, reason: str = "") -> Connection:
    return Connection(
        user_id=user, account_id="acct-1", connection_id=cid, address=address, tenant_id="t", user_object_id=cid,
        home_account_id="", status=status, active=active, connected_at=NOW, updated_at=NOW, status_reason=reason,
    )  # fmt: skip


def seed(storage: StorageClients) -> None:
    connections = ConnectionStore(storage.tables)
    connections.save([connection("teacher-1", "c-active", "alex@school.example", Status.CONNECTED, True)])
    connections.save(
        [connection("teacher-2", "c-lost", "sam@school.example", Status.NEEDS_RECONNECT, True, "invalid_grant")]
    )
    connections.save([connection("teacher-3", "c-gone", "kim@school.example", Status.DISCONNECTED, False)])
    mailbox = mailbox_key("t", "c-active")
    SubscriptionStore(storage.tables).save(
        Subscription("sub-1", mailbox, "t", "state", "/users/c-active/messages", NOW + dt.timedelta(days=3))
    )
    mailboxes = MailboxStore(storage.tables)
    mailboxes.join(mailbox, "teacher-1", "c-active", NOW)
    mailboxes.point_at(mailbox, "sub-1")
    mailboxes.touch(mailbox, NOW - dt.timedelta(minutes=5))
    skips = MessageStore(storage.tables, storage.blobs)
    for i, reason in enumerate(("attachment_too_large", "attachment_too_large", "attachment_unreadable")):
        skips.record_skip(SkipRecord(
            user_id="teacher-1", thread_id=f"thread-{i}", connection_id="c-active", internet_message_id=f"<m{i}@x>",
            direction=Direction.INBOUND, reason=reason, details=({"name": "secret-plan.pdf", "size": 4194304},),
            subject="Private subject", at=NOW - dt.timedelta(minutes=i),
        ))  # fmt: skip
    FailureStore(storage.tables).record(names.QUEUE_CATCHUP, '{"user_id": "teacher-1"}', NOW, "transient: Graph 503")
    storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX).send_message('{"refs": []}')


def test_status_prints_connections_queues_failures_and_skips(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    seed(storage)

    code, out, _ = run(capsys, environ, "status")

    assert code == 0
    assert "Connections (3: active 1, disconnected 1, needs_reconnect 1)" in out
    for text in ("alex@school.example", "sam@school.example", "invalid_grant", "(in 3.0d)", "(5m ago)"):
        assert text in out
    assert "inbound-messages" in out and "catchup-requests" in out
    assert "transient: Graph 503" in out
    assert "Skips by reason since " in out and "UTC (3 in all)" in out
    assert "attachment_too_large" in out and "attachment_unreadable" in out
    # An operator's view of skips: reasons and sizes, never the subject or the file's name.
    assert "Private subject" not in out and "secret-plan.pdf" not in out


def test_status_json_is_one_document_for_scripts(own_storage: Env, capsys: pytest.CaptureFixture[str]) -> None:
    environ, storage = own_storage
    seed(storage)

    code, out, _ = run(capsys, environ, "status", "--json")

    assert code == 0
    status = json.loads(out)
    assert status["by_status"] == {"active": 1, "disconnected": 1, "needs_reconnect": 1}
    active = next(c for c in status["connections"] if c["status"] == "active")
    assert active["subscription_expires_at"] == (NOW + dt.timedelta(days=3)).isoformat()
    depths = {q["queue"]: (q["messages"], q["poison"]) for q in status["queues"]}
    assert depths == {
        "inbound-messages": (0, 1), "lifecycle-events": (0, 0), "catchup-requests": (0, 0), "enrollio-events": (0, 0)
    }  # fmt: skip
    assert [f["error"] for f in status["failures"]] == ["transient: Graph 503"]
    assert status["skips"]["by_reason"] == {"attachment_too_large": 2, "attachment_unreadable": 1}
    assert [s["thread_id"] for s in status["skips"]["recent"]] == ["thread-0", "thread-1", "thread-2"]


def seed_events(storage: StorageClients) -> None:
    """Two events Enrollio has not got: one retrying (its receiver answered 503), one it refused."""
    outbox = OutboxStore(storage.tables)
    fact = Fact(names.TABLE_SKIPS, "teacher-1", "row-1", {"Reason": "attachment_too_large"})
    for event_id in ("evt_" + "a" * 32, "evt_" + "b" * 32):
        outbox.add(event_id, "message.skipped", b'{"type": "message.skipped"}', fact, None, NOW - dt.timedelta(hours=2))
    outbox.retry_at("evt_" + "a" * 32, "HTTP 503", NOW + dt.timedelta(minutes=20))
    outbox.refuse("evt_" + "b" * 32, "Enrollio answered HTTP 401", NOW)


def test_status_shows_the_events_enrollio_has_not_got_pending_and_refused(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    seed_events(storage)

    code, out, _ = run(capsys, environ, "status")
    assert code == 0
    assert "Events to Enrollio not delivered (pending 1, refused 1, oldest pending " in out
    refused_line = next(line for line in out.splitlines() if "evt_" + "b" * 32 in line)
    assert "refused" in refused_line and "Enrollio answered HTTP 401" in refused_line
    pending_line = next(line for line in out.splitlines() if "evt_" + "a" * 32 in line)
    assert "pending" in pending_line and "HTTP 503" in pending_line and "(in 20m)" in pending_line

    code, out, _ = run(capsys, environ, "events", "--json")
    assert code == 0
    events = json.loads(out)["events"]
    assert (events["pending"], events["refused"]) == (1, 1)
    assert [(e["status"], e["last_error"]) for e in events["recent"]] == [
        ("refused", "Enrollio answered HTTP 401"),
        ("pending", "HTTP 503"),
    ]


def decoded(storage: StorageClients, queue: str) -> list[Any]:
    """The queue's messages as the Functions trigger reads them: base64 text of the body."""
    raw = storage.queues.get_queue_client(queue)
    return [json.loads(base64.b64decode(m.content)) for m in raw.peek_messages(max_messages=32)]


def test_replay_poison_sends_back_and_keeps_what_cannot_be_replayed(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    failures = FailureStore(storage.tables)
    ref = {"user_id": "u", "connection_id": "c", "message_id": "m1"}
    failures.record(names.QUEUE_INBOUND, json.dumps(ref), NOW, "permanent: graph_error: 400")
    failures.record(names.QUEUE_INBOUND, json.dumps({**ref, "message_id": "m2"}), NOW, "permanent")
    failures.record(names.QUEUE_INBOUND, json.dumps({"refs": [{**ref, "message_id": "m3"}], "attempt": 4}), NOW, "x")
    malformed = failures.record(names.QUEUE_INBOUND, "not json", NOW, "malformed: inbound pack is not JSON")
    poisoned = json.dumps({"refs": [{**ref, "message_id": "m4"}]})
    storage.queue(names.QUEUE_INBOUND + names.POISON_SUFFIX).send_message(poisoned)

    code, out, _ = run(capsys, environ, "--json", "replay-poison", "inbound-messages-poison")

    assert code == 0
    report = json.loads(out)
    assert (report["from_poison_queue"], report["rows_replayed"], report["error"]) == (1, 3, "")
    assert list(report["kept"]) == [malformed]
    sent = decoded(storage, names.QUEUE_INBOUND)
    assert sorted(r["message_id"] for m in sent for r in m["refs"]) == ["m1", "m2", "m3", "m4"]
    assert all("attempt" not in m for m in sent)  # a replay gets every retry again
    assert decoded(storage, names.QUEUE_INBOUND + names.POISON_SUFFIX) == []
    assert [f["id"] for f in failures.recent(names.QUEUE_INBOUND)] == [malformed]


def test_replay_poison_deletes_nothing_it_could_not_send(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    failures = FailureStore(storage.tables)
    failures.record(names.QUEUE_CATCHUP, '{"user_id": "u", "connection_id": "c"}', NOW, "transient")
    storage.queue(names.QUEUE_CATCHUP + names.POISON_SUFFIX).send_message('{"user_id": "u2"}')

    def unreachable(self: QueueClient, *args: object, **kwargs: object) -> None:
        raise ServiceRequestError("storage unreachable")

    monkeypatch.setattr(QueueClient, "send_message", unreachable)
    code, out, err = run(capsys, environ, "replay-poison", "catchup-requests")

    assert code == 1
    assert "stopped early: ServiceRequestError: storage unreachable" in err
    assert "replayed 0 message(s)" in out
    assert len(failures.recent(names.QUEUE_CATCHUP)) == 1
    monkeypatch.undo()
    poison = storage.queues.get_queue_client(names.QUEUE_CATCHUP + names.POISON_SUFFIX)
    assert poison.get_queue_properties().approximate_message_count == 1  # visible again once its lease ends


def test_resync_queues_a_catch_up_for_the_connection(own_storage: Env, capsys: pytest.CaptureFixture[str]) -> None:
    environ, storage = own_storage
    seed(storage)

    code, out, _ = run(capsys, environ, "resync", "alex@school.example")

    assert code == 0
    assert "catch-up requested for alex@school.example" in out
    [request] = decoded(storage, names.QUEUE_CATCHUP)
    assert (request["user_id"], request["connection_id"], request["reason"]) == (
        "teacher-1",
        "c-active",
        "operator_resync",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay-poison", "outbound"], "'outbound' is not one of this service's queues"),
        (["resync", "nobody@school.example"], "no connection has the id or address 'nobody@school.example'"),
        (["disconnect", "c-active", "--yes"], "this command acts at Graph as the mailbox and needs the app's settings"),
        (["disconnect", "c-active"], "disconnect needs --yes when not run from a terminal"),
    ],
)
def test_a_command_that_cannot_run_says_why(
    own_storage: Env, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    environ, storage = own_storage
    seed(storage)

    code, _, err = run(capsys, environ, *argv)

    assert code == 1
    assert message in " ".join(err.split())


def test_without_storage_settings_it_names_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, {}, "queues")
    assert code == 1
    assert "AzureWebJobsStorage" in err and "--account-name" in " ".join(err.split())


# -- what operators type and what the service stored is printed as it is ------------------------------------


def test_stored_text_and_names_are_printed_as_they_are_never_as_markup(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    seed(storage)
    FailureStore(storage.tables).record(
        names.QUEUE_LIFECYCLE, '{"event": "[red]x"}', NOW, "permanent: Graph said [/oops] and [bold]loud[/bold]"
    )

    code, out, _ = run(capsys, environ, "status")
    assert code == 0
    assert "permanent: Graph said [/oops] and [bold]loud[/bold]" in out and '{"event": "[red]x"}' in out

    code, _, err = run(capsys, environ, "resync", "[/x]")
    assert code == 1
    assert "no connection has the id or address '[/x]'" in " ".join(err.split())


@pytest.mark.parametrize(
    "error",
    [
        Transient("Graph answered 503: retry later"),
        requests.ConnectionError("Graph unreachable"),
        OSError(28, "No space left on device"),
    ],
)
def test_an_error_is_one_line_not_a_traceback_and_json_gets_an_error_document(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    environ, storage = own_storage
    seed(storage)

    def fails(*args: object) -> None:
        raise error

    monkeypatch.setattr(actions, "disconnect_connection", fails)

    code, out, err = run(capsys, environ, "disconnect", "c-active", "--yes")
    assert (code, out) == (1, "")
    assert "Traceback" not in err and str(error) in " ".join(err.split())

    code, out, _ = run(capsys, environ, "--json", "disconnect", "c-active", "--yes")
    assert code == 1
    assert str(error) in json.loads(out)["error"]


def test_json_errors_of_known_kinds_are_a_document_too(own_storage: Env, capsys: pytest.CaptureFixture[str]) -> None:
    environ, _ = own_storage
    code, out, _ = run(capsys, environ, "--json", "resync", "nobody@school.example")
    assert code == 1
    assert json.loads(out) == {"error": "no connection has the id or address 'nobody@school.example'"}


# -- operator input ------------------------------------------------------------------------------------------


def test_a_mailbox_address_is_found_whatever_its_case(own_storage: Env, capsys: pytest.CaptureFixture[str]) -> None:
    environ, storage = own_storage
    seed(storage)
    ConnectionStore(storage.tables).save(
        [connection("teacher-4", "c-cased", "Robin.Lee@School.example", Status.CONNECTED, True)]
    )

    code, out, _ = run(capsys, environ, "resync", "robin.lee@school.EXAMPLE")

    assert code == 0, out
    assert [r["connection_id"] for r in decoded(storage, names.QUEUE_CATCHUP)] == ["c-cased"]


def test_account_name_drops_every_other_storage_setting() -> None:
    """``--account-name`` on a laptop: a managed identity's client id (or another account's endpoints) copied from
    the app's settings would send the CLI to ManagedIdentityCredential, which only works inside Azure."""
    environ = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
        "AzureWebJobsStorage__queueServiceUri": "https://other.queue.core.windows.net",
    }
    settings = OpsContext(gather_values(None, "enrolliosync", environ)).storage_settings
    assert settings.storage_account_name == "enrolliosync"
    assert (settings.storage_connection_string, settings.storage_client_id, settings.storage_queue_service_uri) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_limit_must_be_a_positive_count(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["failures", "--limit", limit], environ={})
    assert exit_.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_status_shows_what_it_can_read_and_names_what_it_cannot(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator with the table roles but not Storage Queue Data Reader still sees connections, failures, skips."""
    environ, storage = own_storage
    seed(storage)

    def forbidden(*args: object) -> None:
        raise HttpResponseError(message="This request is not authorized to perform this operation using this "
                                "permission. ErrorCode:AuthorizationPermissionMismatch")  # fmt: skip

    monkeypatch.setattr(overview, "queue_depths", forbidden)

    code, out, err = run(capsys, environ, "status")
    assert code == 1
    assert "Connections (3:" in out and "transient: Graph 503" in out and "UTC (3 in all)" in out
    assert "queues: could not read: " in " ".join(err.split()) and "AuthorizationPermissionMismatch" in err

    code, out, _ = run(capsys, environ, "status", "--json")
    document = json.loads(out)
    assert code == 1
    assert document["by_status"] == {"active": 1, "disconnected": 1, "needs_reconnect": 1}
    assert "AuthorizationPermissionMismatch" in document["errors"]["queues"]


# -- skips: recent ones by default ---------------------------------------------------------------------------


def test_skips_are_counted_since_a_week_ago_unless_asked_otherwise(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    seed(storage)  # three skips in the last minutes
    MessageStore(storage.tables, storage.blobs).record_skip(SkipRecord(
        user_id="teacher-1", thread_id="thread-old", connection_id="c-active", internet_message_id="<old@x>",
        direction=Direction.INBOUND, reason="attachment_unreadable", details=(), subject="",
        at=NOW - dt.timedelta(days=10),
    ))  # fmt: skip

    code, out, _ = run(capsys, environ, "skips")
    assert code == 0
    assert "Skips by reason since " in out and "(3 in all)" in out

    code, out, _ = run(capsys, environ, "skips", "--since", "30d", "--json")
    assert code == 0
    assert json.loads(out)["skips"]["by_reason"] == {"attachment_unreadable": 2, "attachment_too_large": 2}

    code, out, _ = run(capsys, environ, "skips", "--since", (NOW - dt.timedelta(minutes=30)).isoformat(), "--json")
    assert json.loads(out)["skips"]["scanned"] == 3


# -- renew: through the lifecycle queue, with storage only ---------------------------------------------------


def test_renew_asks_the_lifecycle_worker_with_storage_access_only(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage  # no Graph client, no secrets: what an operator's own sign-in can reach
    seed(storage)

    code, out, err = run(capsys, environ, "renew", "alex@school.example")

    assert code == 0, err
    assert "renewal of 1 subscription(s) queued for alex@school.example" in " ".join(out.split())
    assert decoded(storage, names.QUEUE_LIFECYCLE) == [{"subscription_id": "sub-1", "event": "renew"}]


def test_renew_without_a_subscription_says_what_to_do_instead(
    own_storage: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, storage = own_storage
    seed(storage)

    code, _, err = run(capsys, environ, "renew", "sam@school.example")

    assert code == 1
    said = " ".join(err.split())
    assert "sam@school.example has no subscription to renew" in said
    # What does get it one: a resync only catches mail up.
    assert "its user connects the mailbox again in Enrollio" in said and "it does not subscribe" in said
    assert decoded(storage, names.QUEUE_LIFECYCLE) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disconnect_asks_first_and_an_answer_other_than_yes_changes_nothing(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, storage = own_storage
    seed(storage)
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))

    code, _, err = run(capsys, environ, "disconnect", "alex@school.example")

    assert code == 1
    assert "Disconnect alex@school.example of user teacher-1? [y/N]" in err and "nothing changed" in err
    [kept] = [c for c in ConnectionStore(storage.tables).find("c-active")]
    assert kept.status is Status.CONNECTED


def test_without_an_azure_sign_in_status_fails_once_saying_so(
    own_storage: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, _ = own_storage

    def not_signed_in(*args: object) -> None:
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    monkeypatch.setattr(overview, "connections", not_signed_in)

    code, out, err = run(capsys, environ, "status")

    assert (code, out) == (1, "")
    assert " ".join(err.split()).count("no Azure sign-in to reach storage with (az login first)") == 1


def test_a_skips_sizes_say_whether_the_bytes_were_counted_or_graph_reported_them() -> None:
    from sync_core.ops.overview import _sizes

    details = (
        {"name": "a.pdf", "cap": 3, "graph_size": 4194541},  # far over: never downloaded
        {"name": "b.pdf", "cap": 3, "graph_size": 3145966, "measured_size": 3145729},
        {"name": "c.eml", "cap": 3, "graph_size": 2621677, "measured_at_least": 3211265},
        {"name": "d.pdf", "size": 4194304},  # a row written before the details told the two apart
    )
    assert _sizes(details) == (
        "4 item(s): 4194541 bytes (Graph's size), 3145729 bytes, more than 3211265 bytes, 4194304 bytes (Graph's size)"
    )
