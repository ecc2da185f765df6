"""The locks: every package Azure or ``make setup`` installs is pinned with hashes, and agrees with the hand pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")


def locked(name: str) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes) of a compiled lock file."""
    out: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if match := PIN.match(line):
            current = match[1].lower()
            out[current] = (match[2], 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = out[current]
            out[current] = (version, hashes + 1)
    return out


def hand_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[match[1].lower()] = match[2]
    return pins


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt", "requirements-checkov.txt"])
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    packages = locked(lock)
    assert packages
    assert [name for name, (_, hashes) in packages.items() if hashes == 0] == []


@pytest.mark.parametrize(
    ("source", "lock"),
    [
        ("requirements.in", "requirements.txt"),
        ("requirements-dev.in", "requirements-dev.txt"),
        ("requirements-checkov.in", "requirements-checkov.txt"),
    ],
)
def test_the_locks_hold_exactly_the_hand_pinned_versions(source: str, lock: str) -> None:
    packages = locked(lock)
    for name, version in hand_pins(source).items():
        assert packages.get(name, ("missing", 0))[0] == version, f"{name} in {lock}: run make lock"


def test_the_development_lock_installs_the_runtime_lock_unchanged() -> None:
    runtime, dev = locked("requirements.txt"), locked("requirements-dev.txt")
    assert {name: dev.get(name, ("missing", 0))[0] for name in runtime} == {n: v for n, (v, _) in runtime.items()}
