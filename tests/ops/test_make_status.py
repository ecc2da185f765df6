"""``make status`` after ``make demo``: the operator's view of the demo's data (connections, queues, skips); and
the events to Enrollio the demo prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import demo, status


def test_make_status_shows_the_last_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "demo")
    monkeypatch.setattr(status, "DEMO_AZURITE", tmp_path / "demo" / "azurite")
    monkeypatch.setattr(status, "RUN_SETTINGS", tmp_path / "no-run" / "local.settings.json")  # no `make run` up
    demo.main()
    shown = capsys.readouterr().out

    # make demo prints the events Enrollio received, each verified (the receiver counts any that was not).
    events = shown[shown.index("=== Events Enrollio received (9, each verified") :].split("===")[2]
    types = [line.split()[1] for line in events.strip().splitlines()]
    assert sorted(types) == sorted(
        ["connection.connected"] * 2 + ["message.sent"] * 2 + ["message.synced"] * 3
        + ["message.skipped", "connection.disconnected"]
    )  # fmt: skip
    assert '"reason": "attachment_too_large"' in events and '"direction": "outbound"' in events
    assert "@" not in events  # ids, reasons and sizes: no address

    assert status.main([]) == 0

    out = " ".join(capsys.readouterr().out.split())
    assert "Connections (2: active 1, disconnected 1)" in out
    assert "active │ alex@studio.example │ teacher-42" in out
    assert "disconnected │ alex@school.example │ teacher-42" in out
    assert "inbound-messages │ 0 │ 0" in out
    assert "Skips by reason since " in out and "UTC (1 in all)" in out and "attachment_too_large │ 1" in out


def test_make_status_says_what_to_run_when_there_is_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status, "DEMO_AZURITE", tmp_path / "none")
    monkeypatch.setattr(status, "RUN_SETTINGS", tmp_path / "none.json")
    assert status.main([]) == 1
    assert "run `make demo` first" in capsys.readouterr().err


def test_make_status_args_are_the_status_commands_unless_another_is_named() -> None:
    assert status.with_command([]) == ["status"]
    assert status.with_command(["--since", "30d", "--limit", "5"]) == ["status", "--since", "30d", "--limit", "5"]
    assert status.with_command(["--json", "skips", "--limit", "50"]) == ["--json", "skips", "--limit", "50"]
