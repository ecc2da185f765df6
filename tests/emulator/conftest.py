"""Fixtures for the mail and fault tests: a started emulator, mailboxes, and Graph callers with real tokens."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devtools.emulator import EmulatorServer, Mailbox
from devtools.emulator.state import Change
from devtools.stack import https_session

IMMUTABLE = 'IdType="ImmutableId"'
CONTACT = "parent@family.example"


@dataclass
class Graph:
    """Graph calls as one mailbox (a real bearer token from the emulator's identity platform), plus control calls."""

    emu: EmulatorServer
    mailbox: Mailbox
    token: str
    session: requests.Session

    def call(self, method: str, path: str, *, prefer: tuple[str, ...] = (IMMUTABLE,), **kw: Any) -> requests.Response:
        """A Graph request; ``path`` is below ``/v1.0`` or an absolute link (nextLink, deltaLink, Location)."""
        url = path if path.startswith("https://") else f"{self.emu.graph_base_url}{path}"
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        if prefer:
            headers["Prefer"] = ", ".join(prefer)
        return self.session.request(method, url, headers=headers, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.call("POST", path, **kw)

    def control(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, f"{self.emu.base_url}/_emulator/{path}", timeout=30, **kw)

    def folder_id(self, name: str) -> str:
        answer = self.get(f"/me/mailFolders/{name}")
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def draft(self, **fields: Any) -> dict[str, Any]:
        body = {
            "subject": "Spring term enrolment",
            "body": {"contentType": "html", "content": "<p>Hello from <b>Enrollio</b></p>"},
            "toRecipients": [{"emailAddress": {"address": CONTACT, "name": "Pat Parent"}}],
            **fields,
        }
        answer = self.post("/me/messages", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def deliver(self, **spec: Any) -> dict[str, Any]:
        """A message from an outside contact into this mailbox's Inbox (control endpoint)."""
        body = {"from": {"address": CONTACT, "name": "Pat Parent"}, "subject": "Question", "body_html": "<p>Hi</p>"}
        answer = self.control("POST", f"mail/{self.mailbox.address}/deliver", json={**body, **spec})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def messages(self, folder: str, mailbox: str | None = None) -> list[dict[str, Any]]:
        answer = self.control("GET", f"mail/{mailbox or self.mailbox.address}/messages", params={"folder": folder})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["value"])


@pytest.fixture
def emu(emulator: EmulatorServer) -> EmulatorServer:
    return emulator


@pytest.fixture
def owner(emu: EmulatorServer) -> Mailbox:
    return emu.world.add_mailbox("teacher@school.example", "Tess Teacher")


def graph_for(emu: EmulatorServer, mailbox: Mailbox, client_id: str = "test-client") -> Graph:
    token = emu.identity.issue_token_for_tests(mailbox.id, client_id=client_id)
    return Graph(emu, mailbox, token, https_session(emu.ca_path))


@pytest.fixture
def graph(emu: EmulatorServer, owner: Mailbox) -> Graph:
    return graph_for(emu, owner)


@pytest.fixture
def changes(emu: EmulatorServer) -> Iterator[list[Change]]:
    """Every ``Change`` the world publishes during the test, in order."""
    seen: list[Change] = []
    emu.world.subscribe(seen.append)
    yield seen


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
