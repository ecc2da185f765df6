"""Throttling and injected faults as a Graph client sees them (CONTRACT.md section 8): off unless configured."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devtools.emulator import EmulatorServer
from tests.emulator.conftest import Graph, graph_for


def wait_until(condition: object, what: str, limit: float = 20.0) -> None:
    """Poll ``condition()`` until true; fail (naming ``what``) only if it never gets there."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_everything_is_off_by_default(graph: Graph) -> None:
    settings = graph.control("GET", "faults").json()
    assert (settings["concurrency"], settings["rate_limit"], settings["fail_503_rate"], settings["latency_ms"]) == (
        None,
        None,
        0.0,
        0,
    )
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: graph.get("/me").status_code, range(24)))
    assert statuses == [200] * 24


def test_a_fifth_concurrent_request_is_throttled_and_another_mailbox_is_not(graph: Graph, emu: EmulatorServer) -> None:
    other = graph_for(emu, emu.world.add_mailbox("office@school.example"))
    configured = graph.control("POST", "faults", json={"concurrency": 4, "latency_ms": 1500})
    assert configured.status_code == 200
    results: list[requests.Response] = []
    holders = [threading.Thread(target=lambda: results.append(graph.get("/me"))) for _ in range(4)]
    for t in holders:
        t.start()
    wait_until(lambda: emu.faults.in_flight("test-client", graph.mailbox.id) == 4, "4 requests in flight")
    fifth = graph.get("/me")
    elsewhere = other.get("/me")  # same app, another mailbox, while the first mailbox is saturated
    for t in holders:
        t.join()
    assert fifth.status_code == 429
    assert float(fifth.headers["Retry-After"]) == 2.128
    assert fifth.json()["error"]["code"] == "TooManyRequests"
    assert elsewhere.status_code == 200
    assert sorted(r.status_code for r in results) == [200] * 4
    assert emu.faults.in_flight("test-client", graph.mailbox.id) == 0  # slots are given back


def test_the_peak_of_requests_in_flight_is_counted_per_app_and_mailbox_until_the_next_configure(
    graph: Graph, emu: EmulatorServer
) -> None:
    """What a test of the service's own limit reads (no limit set: it counts what was sent)."""
    emu.faults.configure(latency_ms=1000)  # long enough for all six to be in flight together on a busy machine
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: graph.get("/me").status_code, range(6)))
    assert statuses == [200] * 6
    assert emu.faults.peak_in_flight("test-client", graph.mailbox.id) == 6
    assert emu.faults.peak_in_flight("another-app", graph.mailbox.id) == 0
    emu.faults.configure(latency_ms=0)
    assert emu.faults.peak_in_flight("test-client", graph.mailbox.id) == 0


def test_the_concurrency_limit_is_per_app(graph: Graph, emu: EmulatorServer) -> None:
    emu.faults.configure(concurrency=1, latency_ms=1500)
    other_app = graph_for(emu, graph.mailbox, client_id="another-app")
    holder = threading.Thread(target=graph.get, args=("/me",))
    holder.start()
    wait_until(lambda: emu.faults.in_flight("test-client", graph.mailbox.id) == 1, "1 request in flight")
    assert graph.get("/me").status_code == 429
    assert other_app.get("/me").status_code == 200  # same mailbox, another app: its own slots
    holder.join()


def test_the_rate_window_throttles_with_a_fractional_retry_after(graph: Graph, emu: EmulatorServer) -> None:
    emu.faults.configure(rate_limit=3, rate_window_seconds=60)
    other = graph_for(emu, emu.world.add_mailbox("office@school.example"))
    assert [graph.get("/me").status_code for _ in range(3)] == [200, 200, 200]
    throttled = graph.get("/me")
    assert throttled.status_code == 429
    assert 0 < float(throttled.headers["Retry-After"]) <= 60
    assert throttled.json()["error"]["innerError"]["status"] == "429"
    assert other.get("/me").status_code == 200
    emu.faults.reset()
    assert graph.get("/me").status_code == 200


@pytest.mark.parametrize(
    ("setting", "status", "code"),
    [("fail_503_rate", 503, "serviceNotAvailable"), ("fail_504_rate", 504, "UnknownError")],
)
def test_injected_server_errors_at_rate_one(graph: Graph, setting: str, status: int, code: str) -> None:
    assert graph.control("POST", "faults", json={setting: 1.0}).status_code == 200
    answers = [graph.get("/me") for _ in range(3)]
    assert [a.status_code for a in answers] == [status] * 3
    assert answers[0].json()["error"]["code"] == code
    if status == 503:
        assert float(answers[0].headers["Retry-After"]) > 0
    assert graph.control("DELETE", "faults").status_code == 200
    assert graph.get("/me").status_code == 200


def test_injected_faults_repeat_for_the_same_seed(graph: Graph, emu: EmulatorServer) -> None:
    def statuses() -> list[int]:
        emu.faults.configure(fail_503_rate=0.3, fail_504_rate=0.2, seed=7)
        return [graph.get("/me").status_code for _ in range(12)]

    first = statuses()
    assert first == statuses()
    assert {200, 503, 504} <= set(first)


def test_bad_fault_settings_are_refused_naming_the_field(graph: Graph, emu: EmulatorServer) -> None:
    for body, field in (
        ({"concurrency": 0}, "concurrency"),
        ({"fail_503_rate": 2}, "fail_503_rate"),
        ({"colour": 1}, "colour"),
    ):
        answer = graph.control("POST", "faults", json=body)
        assert answer.status_code == 400
        assert answer.json()["error"]["message"].startswith(field)
    with pytest.raises(ValueError, match=r"^latency_ms"):
        emu.faults.configure(latency_ms=-1)
    assert graph.control("GET", "faults").json()["concurrency"] is None  # nothing half-applied


def test_scripted_path_failures_answer_only_the_matching_requests(graph: Graph) -> None:
    inbox = "/me/mailFolders/inbox/messages"
    configured = graph.control("POST", "faults", json={"fail_paths": {"inbox": 503}, "retry_after_seconds": 1.5})
    assert configured.status_code == 200
    refused = graph.get(inbox)
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1.5")
    assert refused.json()["error"]["code"] == "serviceNotAvailable"
    assert graph.get("/me").status_code == 200
    graph.control("POST", "faults", json={"fail_paths": {"inbox": 400}})
    assert graph.get(inbox).json()["error"]["code"] == "ErrorInvalidRequest"
    bad = graph.control("POST", "faults", json={"fail_paths": {"inbox": 200}})
    assert bad.status_code == 400
    assert "fail_paths" in bad.json()["error"]["message"]


def test_a_scripted_failure_can_skip_requests_and_stop_after_some(graph: Graph) -> None:
    inbox = "/me/mailFolders/inbox/messages"
    rule = {"status": 503, "method": "GET", "after": 1, "times": 2}
    assert graph.control("POST", "faults", json={"fail_paths": {"inbox": rule}}).status_code == 200
    assert [graph.get(inbox).status_code for _ in range(2)] == [200, 503]
    assert graph.post(inbox, json={}).status_code == 201  # another method: neither counted nor failed
    assert [graph.get(inbox).status_code for _ in range(2)] == [503, 200]
    for bad in ({"status": 503, "after": -1}, {"status": 503, "times": 0}, {"status": 200}, {"status": 503, "x": 1}):
        refused = graph.control("POST", "faults", json={"fail_paths": {"inbox": bad}})
        assert refused.status_code == 400, bad


def test_fail_paths_can_name_one_form_of_a_request_by_its_query(graph: Graph) -> None:
    message = graph.deliver()["id"]
    graph.control("POST", "faults", json={"fail_paths": {f"{message}?$select=subject,body": 400}})
    assert graph.get(f"/me/messages/{message}", params={"$select": "subject,body"}).status_code == 400
    assert graph.get(f"/me/messages/{message}", params={"$select": "subject"}).status_code == 200
    assert graph.get(f"/me/messages/{message}").status_code == 200


def test_a_query_form_and_a_count_script_one_request_together(graph: Graph) -> None:
    message = graph.deliver()["id"]
    rule = {"status": 503, "method": "GET", "after": 1, "times": 1}
    graph.control("POST", "faults", json={"fail_paths": {f"{message}?$select=subject": rule}})
    codes = [graph.get(f"/me/messages/{message}", params={"$select": "subject"}).status_code for _ in range(3)]
    assert codes == [200, 503, 200]
    assert graph.get(f"/me/messages/{message}").status_code == 200  # another form: neither counted nor failed
