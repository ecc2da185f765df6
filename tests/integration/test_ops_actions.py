"""The operator's actions on a connection through the whole stack: ``renew`` has the app's lifecycle worker renew
its Graph subscription now (queued with storage access only: no secrets in the operator's shell),
``disconnect --yes`` disconnects it as Enrollio would (R8), each answered with what changed."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest

from sync_core.ops.cli import main
from tests.integration.conftest import Stack, wait_until


def ops(capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["--json", *argv], environ=dict(os.environ) if environ is None else environ)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return dict(json.loads(captured.out))


def test_renew_renews_the_subscription_and_disconnect_stops_the_connection(
    stack: Stack, user_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mailbox = stack.new_mailbox("operator")
    connection_id = stack.connect(user_id, mailbox)["connection_id"]
    [before] = stack.services.subscriptions.for_connection(connection_id)

    storage_only = {"AzureWebJobsStorage": stack.azurite.connection_string}
    renewed = ops(capsys, "renew", mailbox.upper(), environ=storage_only)

    assert renewed["renewal_queued"] == [before.subscription_id]
    wait_until(
        lambda: any(
            e.method == "PATCH" and e.path.endswith(before.subscription_id) for e in stack.emulator.log.snapshot()
        ),
        what="the lifecycle worker's renewal at Graph",
    )
    stack.settle()
    at_graph = stack.emulator.subscriptions.get(before.subscription_id)
    assert at_graph is not None

    def recorded() -> bool:  # the expiry Graph granted, in the row
        [after] = stack.services.subscriptions.for_connection(connection_id)
        return abs(after.expires_at - at_graph.expires_at) < dt.timedelta(seconds=1)

    wait_until(recorded, what="the renewed expiry recorded")
    assert at_graph.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=23)

    gone = ops(capsys, "disconnect", connection_id, "--user", user_id, "--yes")

    assert gone["status"] == "disconnected"
    listed = stack.enrollio.call("GET", f"/api/users/{user_id}/connections").json()["connections"]
    assert [c["status"] for c in listed] == ["disconnected"]
    assert stack.services.subscriptions.for_connection(connection_id) == []
