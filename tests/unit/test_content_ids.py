"""Inline attachments' contentId whether or not Graph takes the type cast in ``$select`` (CONTRACT.md section 5: the
cast form is not verified against a live tenant), driven by a scripted transport (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sync_core import content_ids
from sync_core.adapters.graph import GraphError
from tests.unit.test_graph_client import client

BASE = "/users/u1/messages/m1"
CAP = 3 * 1024 * 1024
REFUSED = {"error": {"code": "BadRequest", "message": "Could not find a property named 'contentId'"}}


def attachment(id_: str, *, inline: bool, size: int = 2000, kind: str = "fileAttachment") -> dict[str, Any]:
    return {
        "@odata.type": f"#microsoft.graph.{kind}",
        "id": id_,
        "name": f"{id_}.png",
        "size": size,
        "isInline": inline,
    }


MESSAGE = {
    "id": "m1",
    "attachments": [
        attachment("logo", inline=True),
        attachment("map", inline=True),
        attachment("schedule", inline=False),  # not referenced by cid: no need
        attachment("poster", inline=True, size=CAP + 70 * 1024),  # far over the cap: it will not sync anyway
        attachment("mail", inline=True, kind="itemAttachment"),  # not a file: no contentId
    ],
}


def whole(id_: str) -> tuple[int, dict[str, str], Any]:
    return (200, {}, {**attachment(id_, inline=True), "contentId": f"{id_}@school", "contentBytes": "iVBO"})


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(content_ids, "FORM", content_ids._Form())
    yield


def expand_of(request: Any) -> str:
    return parse_qs(urlsplit(request.url).query).get("$expand", [""])[0]


def test_the_type_cast_is_one_get_when_graph_takes_it() -> None:
    graph, adapter, _ = client([(200, {}, {"id": "m1", "attachments": []})])
    assert content_ids.message_with_content_ids(graph, BASE, CAP) == {"id": "m1", "attachments": []}
    assert ["microsoft.graph.fileAttachment/contentId" in expand_of(r) for r in adapter.sent] == [True]


def test_a_refused_type_cast_falls_back_once_per_process_and_each_inline_file_gives_its_content_id() -> None:
    graph, adapter, _ = client(
        [
            (400, {}, REFUSED),
            (200, {}, MESSAGE),
            whole("logo"),
            whole("map"),
            (200, {}, MESSAGE),
            whole("logo"),
            whole("map"),
        ]
    )
    first = content_ids.message_with_content_ids(graph, BASE, CAP)
    assert [a.get("contentId") for a in first["attachments"]] == ["logo@school", "map@school", None, None, None]
    assert content_ids.FORM.cast_taken is False
    again = content_ids.message_with_content_ids(graph, BASE, CAP)  # the cast is not asked for again
    assert [a.get("contentId") for a in again["attachments"]][:2] == ["logo@school", "map@school"]
    each = [f"{BASE}/attachments/logo", f"{BASE}/attachments/map"]
    assert [urlsplit(r.url).path.removeprefix("/v1.0") for r in adapter.sent] == [BASE, BASE, *each, BASE, *each]
    message_gets = [r for r in adapter.sent if urlsplit(r.url).path.endswith("m1")]
    assert ["contentId" in expand_of(r) for r in message_gets] == [True, False, False]  # one refusal in all


def test_a_message_graph_refuses_either_way_is_its_own_refusal_and_the_cast_is_kept() -> None:
    graph, _, _ = client([(400, {}, REFUSED), (400, {}, {"error": {"code": "ErrorInvalidRequest", "message": "no"}})])
    with pytest.raises(GraphError) as refused:
        content_ids.message_with_content_ids(graph, BASE, CAP)
    assert refused.value.code == "ErrorInvalidRequest"
    assert content_ids.FORM.cast_taken is None  # nothing learnt: the next fetch finds out


def test_once_the_cast_has_worked_a_400_is_the_messages_own_refusal() -> None:
    graph, adapter, _ = client([(200, {}, {"id": "m0", "attachments": []}), (400, {}, REFUSED)])
    content_ids.message_with_content_ids(graph, BASE, CAP)
    with pytest.raises(GraphError):
        content_ids.message_with_content_ids(graph, BASE, CAP)
    assert len(adapter.sent) == 2 and content_ids.FORM.cast_taken is True  # no fallback GET for it


def test_another_error_is_not_taken_for_a_refused_cast() -> None:
    graph, adapter, _ = client([(404, {}, {"error": {"code": "ErrorItemNotFound", "message": "gone"}})])
    with pytest.raises(GraphError) as gone:
        content_ids.message_with_content_ids(graph, BASE, CAP)
    assert (gone.value.status, len(adapter.sent), content_ids.FORM.cast_taken) == (404, 1, None)
