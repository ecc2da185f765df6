"""The operator's actions on a connection through the whole stack: ``renew`` renews its Graph subscription now,
``disconnect --yes`` disconnects it as Enrollio would (R8), each answered with what changed."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from sync_core.ops.cli import main
from tests.integration.conftest import Stack


def ops(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["--json", *argv], environ=dict(os.environ))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return dict(json.loads(captured.out))


def test_renew_renews_the_subscription_and_disconnect_stops_the_connection(
    stack: Stack, user_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mailbox = stack.new_mailbox("operator")
    connection_id = stack.connect(user_id, mailbox)["connection_id"]
    [before] = stack.services.subscriptions.for_connection(connection_id)

    renewed = ops(capsys, "renew", mailbox)

    assert renewed["renewed"] == [before.subscription_id]
    [after] = stack.services.subscriptions.for_connection(connection_id)
    assert after.expires_at >= before.expires_at
    assert any(e.method == "PATCH" and e.path.endswith(before.subscription_id) for e in stack.emulator.log.snapshot())

    gone = ops(capsys, "disconnect", connection_id, "--user", user_id, "--yes")

    assert gone["status"] == "disconnected"
    listed = stack.enrollio.call("GET", f"/api/users/{user_id}/connections").json()["connections"]
    assert [c["status"] for c in listed] == ["disconnected"]
    assert stack.services.subscriptions.for_connection(connection_id) == []
