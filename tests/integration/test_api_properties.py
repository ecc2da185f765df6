"""Hostile input against every HTTP route, generated from the served OpenAPI document (schemathesis + Hypothesis).

For each operation, valid and invalid requests (schemathesis' positive and negative modes), signed and unsigned;
some aimed at a real user, thread and attachment, some connect links signed so they reach the field checks. For
every answer: no 5xx; a 4xx names its field; the answer matches the document (status code, content type, schema);
and a refused request writes nothing to storage: the only trace it may leave is its own spent signature (one
``SpentSignatures`` row), which the replay guard records for every signed POST it lets through.

Bounded: a fixed number of examples per operation and mode, derandomized (the same examples every run), no
example database; its own Azurite, so the storage snapshots stay small; timers stopped and Graph's notifications
dropped, so nothing writes in the background while a request is judged.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.emulator.notifier import DeliveryFaults
from devtools.stack import RETURN_URL, Stack, offline_stack
from sync_core import names
from sync_core.openapi import document
from sync_core.signing import (
    IDEMPOTENCY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_link,
    sign_request,
)
from tests.storage_snapshot import Snapshot, changes, snapshot

EXAMPLES = 20  # per operation and mode: 13 operations x 2 modes x 20 = 520 requests, about a minute
OPERATIONS = [(path, method.upper()) for path, item in document()["paths"].items() for method in item]
SIGNATURE_HEADERS = {h.lower() for h in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, "x-functions-key")}


@dataclass
class World:
    """The suite's stack and what exists in it: a connected user with a thread and a stored attachment."""

    stack: Stack
    schema: Any
    user_id: str
    connection_id: str
    thread_id: str
    message_key: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with offline_stack(None, tmp_path_factory.mktemp("properties")) as stack:
        for timer in stack.host.timers:  # nothing may write on a schedule while an answer is judged
            timer.stop()
        user_id = f"prop-{uuid.uuid4().hex[:8]}"
        connection_id = stack.connect(user_id, stack.new_mailbox("prop"))["connection_id"]
        sent = stack.enrollio.call(
            "POST",
            "/api/send",
            headers={IDEMPOTENCY_HEADER: uuid.uuid4().hex},
            body={
                "user_id": user_id,
                "account_id": "acct-1",
                "kind": "individual",
                "contact": {"email": "parent@home.example"},
                "subject": "Hello",
                "text": "Hello",
                "attachments": [{"name": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}],
            },
        )
        assert sent.status_code == 200, sent.text
        stack.settle()
        stack.emulator.subscriptions.notifier.set_faults(DeliveryFaults(drop_rate=1.0))
        thread_id = sent.json()["thread_id"]
        thread = stack.enrollio.call("GET", f"/api/threads/{thread_id}/messages", params={"user_id": user_id})
        message_key = thread.json()["messages"][0]["message_key"]
        served = requests.get(f"{stack.enrollio.base_url}/api/openapi.json", timeout=10).json()
        assert served == json.loads(json.dumps(document()))  # the served document is the code's
        schema = schemathesis.openapi.from_dict(served)
        yield World(stack, schema, user_id, connection_id, thread_id, message_key)


def _aim(world: World, kwargs: dict[str, Any], path: str, choice: int) -> None:
    """Point some requests at what exists, so they reach past the lookups."""
    if choice % 3:
        return
    url = urlsplit(kwargs["url"])
    real = {"user_id": world.user_id, "thread_id": world.thread_id, "message_key": world.message_key}
    segments = url.path.split("/")
    template = path.split("/")
    for i, part in enumerate(template):
        name = part.strip("{}")
        if part.startswith("{") and name in real and i < len(segments):
            segments[i] = real[name]
        if name == "index" and i < len(segments):
            segments[i] = "0"
    kwargs["url"] = url._replace(path="/".join(segments)).geturl()
    if isinstance(kwargs.get("params"), dict) and "user_id" in kwargs["params"]:
        kwargs["params"]["user_id"] = world.user_id
    body = kwargs.get("json")
    if isinstance(body, dict) and "user_id" in body:
        body["user_id"] = world.user_id
        if choice == 0:
            body.pop("thread_id", None)  # a new thread through the connected mailbox
        elif "thread_id" in body:
            body["thread_id"] = world.thread_id  # a reply in the thread
    if isinstance(kwargs.get("params"), dict) and "return_url" in kwargs["params"]:
        kwargs["params"]["return_url"] = RETURN_URL + str(kwargs["params"]["return_url"])[:40]


def _signed_link(world: World, kwargs: dict[str, Any]) -> None:
    """Sign the generated link fields, with a valid expiry and nonce: the request then reaches the field checks."""
    params = {k: str(v) for k, v in (kwargs.get("params") or {}).items() if k not in ("sig", "exp", "nonce")}
    params["exp"] = str(int(time.time()) + 300)
    params["nonce"] = secrets.token_urlsafe(16)
    kwargs["params"] = sign_link(world.stack.enrollio.secret, params)


def _prepare(world: World, kwargs: dict[str, Any], signed: bool) -> requests.PreparedRequest:
    headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() not in SIGNATURE_HEADERS}
    if headers.get(IDEMPOTENCY_HEADER) and len(headers[IDEMPOTENCY_HEADER]) <= 255:
        # A fresh key per example: a key seen by an earlier example would make the answer depend on the order.
        headers[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
    request = requests.Request(
        kwargs.pop("method"),
        kwargs.pop("url"),
        headers=headers,
        params=kwargs.pop("params", None),
        cookies=kwargs.pop("cookies", None),
        **{k: v for k, v in kwargs.items() if k in ("json", "data", "files")},
    ).prepare()
    if signed:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        key = next((v for k, v in request.headers.items() if k.lower() == IDEMPOTENCY_HEADER.lower()), "")
        signature = sign_request(
            world.stack.enrollio.secret,
            int(time.time()),
            request.method or "GET",
            request.path_url,
            body,
            nonce=secrets.token_urlsafe(16),
        )
        if key:  # sign what is sent, whatever the generated key holds
            signature = sign_request(
                world.stack.enrollio.secret,
                int(time.time()),
                request.method or "GET",
                request.path_url,
                body,
                nonce=signature[NONCE_HEADER],
                idempotency_key=key,
            )
            signature.pop(IDEMPOTENCY_HEADER)
        request.headers.update(signature)
    return request


def _names_its_field(response: requests.Response) -> bool:
    if response.headers.get("Content-Type", "").startswith("text/html"):
        return "field:" in response.text
    fields = response.json().get("fields") or []
    return bool(fields) and all(isinstance(f.get("field"), str) and f["field"] for f in fields)


def _spent_rows(before: Snapshot, after: Snapshot) -> int:
    key = f"table {names.TABLE_SPENT_SIGNATURES}"
    old, new = before[key], after[key]
    assert isinstance(old, frozenset) and isinstance(new, frozenset)
    assert old <= new, "a spent signature was forgotten"
    return len(new - old)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_5xx_every_4xx_names_its_field_and_refused_requests_write_nothing(
    world: World, path: str, method: str, mode: GenerationMode
) -> None:
    described_op = document()["paths"][path][method.lower()]
    if mode is GenerationMode.NEGATIVE and not described_op.get("parameters") and "requestBody" not in described_op:
        pytest.skip("no parameter or body to make invalid")
    operation = world.schema[path][method]
    storage = world.stack.services.storage
    session = requests.Session()
    session.trust_env = False
    is_signed = bool(described_op["security"])

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode), choice=st.integers(0, 9))
    def check(case: Any, choice: int) -> None:
        kwargs = case.as_transport_kwargs(base_url=world.stack.enrollio.base_url)
        _aim(world, kwargs, path, choice)
        if path == "/api/outlook/connect" and choice % 2 == 0:
            _signed_link(world, kwargs)
        signed = is_signed and choice != 9  # one in ten signed calls goes unsigned: a 401 naming the header
        request = _prepare(world, kwargs, signed)
        before = snapshot(storage)
        response = session.send(request, allow_redirects=False, timeout=60)
        after = snapshot(storage)
        described = f"{request.method} {request.url} -> {response.status_code} {response.text[:300]!r}"
        assert response.status_code < 500, described
        host_404 = response.status_code == 404 and not response.content  # the host matched no route (a '/' in an id)
        if 400 <= response.status_code < 500 and not host_404:
            assert _names_its_field(response), described
        if not host_404:
            case.validate_response(
                response,
                checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
            )
        if response.status_code >= 400:
            spent = _spent_rows(before, after)
            assert spent <= (1 if signed and method == "POST" else 0), described
            assert changes(before, after) == {} or set(changes(before, after)) == {
                f"table {names.TABLE_SPENT_SIGNATURES}"
            }, (described, changes(before, after))

    check()


def test_a_refused_request_leaves_storage_as_it_was_even_with_a_real_user(world: World) -> None:
    """The snapshot comparison itself can fail: an accepted send changes storage, a refused one does not."""
    body = {
        "user_id": world.user_id,
        "account_id": "acct-1",
        "kind": "individual",
        "contact": {"email": "parent@home.example"},
        "subject": "x" * 999,
        "text": "too long a subject",
    }
    storage = world.stack.services.storage
    before = snapshot(storage, skip=(names.TABLE_SPENT_SIGNATURES,))
    refused = world.stack.enrollio.call("POST", "/api/send", body=body, headers={IDEMPOTENCY_HEADER: "k1"})
    assert refused.status_code == 400
    assert snapshot(storage, skip=(names.TABLE_SPENT_SIGNATURES,)) == before
    accepted = world.stack.enrollio.call(
        "POST", "/api/send", body={**body, "subject": "fine"}, headers={IDEMPOTENCY_HEADER: "k2"}
    )
    assert accepted.status_code == 200, accepted.text
    assert changes(before, snapshot(storage, skip=(names.TABLE_SPENT_SIGNATURES,))) != {}
