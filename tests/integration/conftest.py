"""Fixtures for end-to-end tests on the whole offline stack (``devtools.stack``): Azurite, the Graph + identity
emulator and the local host running the real ``function_app``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devtools.azurite import Azurite
from devtools.stack import RETURN_URL, Stack, offline_stack
from tests.polling import wait_until

__all__ = ["RETURN_URL", "Stack", "refusing", "wait_until"]


@pytest.fixture(scope="module")
def stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Per module: the stack puts its settings in the environment (the app reads them there), and they must be
    # gone before other tests run. Azurite is shared; the emulator and the host start in about a second.
    # A short retry budget: a test of Graph being unavailable should not wait Graph's 20 s default.
    # Timers fire only when a test runs them: a quarter-hour catch-up or an hourly renewal landing mid-test fetched
    # messages a test was counting, or had its own catch-up dropped as "in progress" (tests/test_local_host.py
    # tests the schedules themselves).
    with offline_stack(azurite, tmp_path_factory.mktemp("stack"), GRAPH_RETRY_BUDGET_SECONDS="3") as running:
        for timer in running.host.timers:
            timer.stop()
        yield running


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


@contextmanager
def refusing() -> Iterator[None]:
    """While open, Graph refuses every subscription our code asks for (400: a clientState over 128 characters)."""
    from sync_core import mailbox

    original = mailbox.create_request

    def too_long_client_state(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**original(*args, **kwargs), "clientState": "x" * 129}

    mailbox.create_request = too_long_client_state  # type: ignore[assignment]
    try:
        yield
    finally:
        mailbox.create_request = original
