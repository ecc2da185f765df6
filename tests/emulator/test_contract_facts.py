"""Documented Graph facts the emulator must honour, where the offline world used to be kinder than Microsoft's.

Each test names the section of CONTRACT.md (docs/graph-contract.md) it follows. A product test that passes only
because the emulator is kinder than Graph is a defect: these keep the emulator as strict as the documentation.
"""

from __future__ import annotations

import datetime as dt

import pytest

from devtools.emulator import mail_delta
from devtools.emulator.mail_store import MailStore
from tests.emulator.conftest import IMMUTABLE, Graph
from tests.emulator.test_mail import DELTA, run_round


def received_at(graph: Graph, message_id: str, moment: dt.datetime) -> None:
    """Stamp a message's receivedDateTime (the world's clock is real time; tests need distinct ones)."""
    box = MailStore.of(graph.emu.world).box(graph.mailbox)
    with graph.emu.world.lock:
        message = box.message(message_id)
        assert message is not None
        message.received = moment


T0 = dt.datetime(2020, 11, 30, 9, 0, tzinfo=dt.UTC)  # in the past: new deliveries come after it


# -- CONTRACT.md section 7: delta takes $filter=receivedDateTime ge|gt {value}, and then at most 5,000 messages --
def test_delta_filters_on_received_time_and_keeps_the_filter_in_its_links(graph: Graph) -> None:
    early, edge, late = (graph.deliver(subject=s)["id"] for s in ("early", "edge", "late"))
    for message_id, minutes in ((early, 0), (edge, 10), (late, 20)):
        received_at(graph, message_id, T0 + dt.timedelta(minutes=minutes))
    pages, delta_link = run_round(graph, DELTA, **{"$filter": "receivedDateTime ge 2020-11-30T09:10:00Z"})
    assert [m["id"] for p in pages for m in p] == [edge, late]
    pages, _ = run_round(graph, DELTA, **{"$filter": "receivedDateTime gt 2020-11-30T09:10:00.0000000Z"})
    assert [m["id"] for p in pages for m in p] == [late]
    assert "$filter" not in delta_link  # carried by the token, like $select
    newer = graph.deliver(subject="after the round")["id"]
    pages, _ = run_round(graph, delta_link)
    assert [m["id"] for p in pages for m in p] == [newer]


@pytest.mark.parametrize(
    "expression",
    ["subject eq 'x'", "receivedDateTime le 2020-11-30T09:10:00Z", "receivedDateTime ge yesterday"],
)
def test_delta_refuses_any_other_filter_naming_it(graph: Graph, expression: str) -> None:
    answer = graph.get(DELTA, params={"$filter": expression})
    assert answer.status_code == 400
    assert "$filter" in answer.json()["error"]["message"]


def test_a_filtered_delta_round_stops_at_its_cap_as_if_complete(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mail_delta.FILTERED_ROUND_CAP == 5000  # CONTRACT.md section 7
    monkeypatch.setattr(mail_delta, "FILTERED_ROUND_CAP", 2)
    ids = [graph.deliver(subject=f"m{n}")["id"] for n in range(3)]
    for n, message_id in enumerate(ids):
        received_at(graph, message_id, T0 + dt.timedelta(minutes=n))
    answer = graph.get(DELTA, params={"$filter": "receivedDateTime ge 2020-11-30T00:00:00Z"}, prefer=(IMMUTABLE,))
    assert [m["id"] for m in answer.json()["value"]] == ids[1:]  # the newest two (the emulator's assumption)
    assert "@odata.deltaLink" in answer.json()
