"""What ``replay-poison`` sends back for Failures rows: a pure decision (``sync_core.ops.replay.plan_replay``)."""

from __future__ import annotations

import datetime as dt
import json

from sync_core import names
from sync_core.adapters.ops_store import MAX_TEXT, FailureRow
from sync_core.ops.replay import plan_replay
from sync_core.webhook import MAX_PACKED_BYTES

AT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def row(key: str, message: object, error: str = "permanent: graph_error: 400", queue: str = "") -> FailureRow:
    text = message if isinstance(message, str) else json.dumps(message)
    return FailureRow(queue or names.QUEUE_INBOUND, key, text, error, AT)


def ref(message_id: str) -> dict[str, str]:
    return {"user_id": "u", "connection_id": "c", "message_id": message_id}


def test_inbound_references_go_back_packed_together_with_fresh_retries() -> None:
    plan = plan_replay(
        names.QUEUE_INBOUND,
        [row("r1", ref("m1")), row("r2", {"refs": [ref("m2"), ref("m3")], "attempt": 4}), row("r3", ref("m4"))],
    )
    [resend] = plan.resend
    assert json.loads(resend.message) == {"refs": [ref("m1"), ref("m2"), ref("m3"), ref("m4")]}
    assert resend.rows == ("r1", "r2", "r3")
    assert plan.kept == {}


def test_what_would_fail_again_or_was_cut_is_kept_with_the_reason() -> None:
    plan = plan_replay(
        names.QUEUE_INBOUND,
        [
            row("bad-json", "not json", "malformed: inbound pack is not JSON"),
            row("bad-ref", {"nonsense": 1}, "malformed: message reference: user_id (Field required)"),
            row("cut", '{"refs": [' + "x" * MAX_TEXT),
            row("empty", {"refs": ["not a reference"]}),
        ],
    )
    assert plan.resend == []
    assert set(plan.kept) == {"bad-json", "bad-ref", "cut", "empty"}
    assert plan.kept["cut"] == "the recorded message was cut at the table's size limit"


def test_other_queues_get_each_message_back_as_it_was() -> None:
    body = json.dumps({"user_id": "u", "connection_id": "c", "reason": "missed", "requested_at": AT.isoformat()})
    plan = plan_replay(names.QUEUE_CATCHUP, [row("r1", body, "transient: Graph 503", names.QUEUE_CATCHUP)])
    assert [(r.message, r.rows) for r in plan.resend] == [(body, ("r1",))]


def long_ref(n: int) -> dict[str, str]:
    return {"user_id": "u", "connection_id": "c", "message_id": f"m{n:04d}" + "x" * 150}


def test_a_rows_references_are_never_split_over_two_packs() -> None:
    """Each row is deleted once the pack carrying its references is sent: a row split over two packs would be
    deleted with the first, and the second pack's references lost if its send failed."""
    rows = [row(f"r{r}", {"refs": [long_ref(r * 100 + n) for n in range(100)]}) for r in range(3)]

    plan = plan_replay(names.QUEUE_INBOUND, rows)

    for resend in plan.resend:
        assert len(resend.message) <= MAX_PACKED_BYTES + 20
        carried = {r["message_id"] for r in json.loads(resend.message)["refs"]}
        owned = {r["message_id"] for owner in resend.rows for r in json.loads(rows[int(owner[1:])].message)["refs"]}
        assert carried == owned, "a pack carries exactly the references of the rows it deletes"
    assert sorted(r for resend in plan.resend for r in resend.rows) == ["r0", "r1", "r2"]
