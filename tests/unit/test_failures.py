"""The failure vocabulary (sync_core.failures) and the re-queue delay: pure, no I/O."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from pydantic import BaseModel, ValidationError

from sync_core.adapters.graph import GraphError, GraphUnavailable
from sync_core.failures import Malformed, Permanent, Transient, classify, malformed, parse_json, recorded_line
from sync_core.workers import MAX_RETRY_DELAY_SECONDS, retry_delay

ROOT = Path(__file__).resolve().parents[2]


def test_graph_throttling_is_transient_and_keeps_its_retry_after() -> None:
    failure = classify(GraphUnavailable(429, "TooManyRequests", "slow down", 2.128))
    assert isinstance(failure, Transient)
    assert failure.retry_after == 2.128


def test_a_graph_refusal_is_permanent_and_names_graphs_code() -> None:
    failure = classify(GraphError(400, "ErrorInvalidRequest", "no"))
    assert isinstance(failure, Permanent)
    assert failure.reason == "graph_error"
    assert failure.describe() == "permanent: graph_error: 400 ErrorInvalidRequest: no"


@pytest.mark.parametrize(
    "exc",
    [ServiceRequestError("connection reset"), HttpResponseError("server busy"), OSError("reset"), ValueError("bug")],
)
def test_storage_network_and_unexpected_errors_are_retried(exc: Exception) -> None:
    failure = classify(exc)
    assert isinstance(failure, Transient)
    assert failure.retry_after is None
    assert type(exc).__name__ in str(failure)


def test_the_vocabulary_passes_through_unchanged() -> None:
    for failure in (Transient("x", 1.0), Permanent("unstorable", "too big"), Malformed("bad")):
        assert classify(failure) is failure


def test_a_queue_message_that_is_not_json_is_malformed() -> None:
    with pytest.raises(Malformed, match="catch-up request is not JSON"):
        parse_json("{", "catch-up request")


def test_a_validation_error_names_each_field() -> None:
    class Ref(BaseModel):
        user_id: str
        message_id: str

    with pytest.raises(ValidationError) as caught:
        Ref.model_validate({"user_id": 1})
    described = malformed(caught.value, "message reference").describe()
    assert described.startswith("malformed: message reference: ")
    assert "user_id (" in described and "message_id (" in described


def test_the_retry_delay_doubles_per_attempt_up_to_a_cap_and_honours_retry_after() -> None:
    assert [retry_delay(a, None) for a in range(4)] == [10.0, 20.0, 40.0, 80.0]
    assert retry_delay(30, None) == MAX_RETRY_DELAY_SECONDS
    assert retry_delay(0, 60.0) == 60.0  # Graph asked for longer than the back-off
    assert retry_delay(3, 2.128) == 80.0


def test_the_recorded_failure_log_line_is_what_the_operators_alert_counts() -> None:
    """infra/modules/alerts.bicep counts this log line by queue: the wording and the query must agree."""
    bicep = (ROOT / "infra" / "modules" / "alerts.bicep").read_text()
    query = re.search(r"var recordedQuery = \'\'\'(.*?)\'\'\'", bicep, re.S)
    assert query is not None
    has = re.search(r'message has "([^"]+)"', query.group(1))
    extract = re.search(r'extract\(@"([^"]+)", 1, message\)', query.group(1))
    assert has is not None and extract is not None
    for queue in ("inbound-messages", "catchup-requests", "lifecycle-events"):
        line = recorded_line(queue, "0922-abc", Permanent("graph_error", "400 ErrorInvalidRequest: no"))
        assert has.group(1) in line
        found = re.search(extract.group(1), line)
        assert found is not None and found.group(1) == queue


def test_the_azure_sdks_per_request_logging_is_quiet() -> None:
    import sync_core.adapters.storage  # noqa: F401  (sets the level on import)

    policy = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert not policy.isEnabledFor(logging.INFO)
    assert policy.isEnabledFor(logging.WARNING)


class StorageAnswer:
    """What azure-core's HttpResponseError reads of a storage response: its status and x-ms-error-code."""

    def __init__(self, status: int, code: str) -> None:
        self.status_code, self.reason, self.headers = status, "refused", {"x-ms-error-code": code}
        self.request = None

    def text(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "PropertyValueTooLarge"), (400, "EntityTooLarge"), (413, "RequestBodyTooLarge"), (413, "")],
)
def test_storage_refusing_a_write_for_its_size_is_unstorable(status: int, code: str) -> None:
    failure = classify(HttpResponseError(response=StorageAnswer(status, code)))  # type: ignore[arg-type]
    assert isinstance(failure, Permanent)
    assert failure.reason == "unstorable"


@pytest.mark.parametrize("code", ["Md5Mismatch", "InvalidHeaderValue", "AuthenticationFailed", "OutOfRangeInput"])
def test_other_storage_400s_are_retried_not_recorded_as_unstorable(code: str) -> None:
    """A checksum mismatch or a bad header is this service's or the moment's fault, not the message's."""
    failure = classify(HttpResponseError(response=StorageAnswer(400, code)))  # type: ignore[arg-type]
    assert isinstance(failure, Transient)
    assert code in str(failure) or "HttpResponseError" in str(failure)
