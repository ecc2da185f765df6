"""The replay guard's table on Azurite: a signature is spent once, even by racing requests; past hours are pruned."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient

from devtools.azurite import Azurite
from sync_core import names
from sync_core.adapters.spent_signatures import SpentSignatures
from sync_core.adapters.storage import StorageClients

NOW = dt.datetime(2026, 11, 30, 10, 20, tzinfo=dt.UTC)


def test_a_signature_is_spent_once_even_by_eight_racing_requests(storage: StorageClients) -> None:
    spent, signature = SpentSignatures(storage.tables), uuid.uuid4().hex * 2
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: spent.spend("request", signature, NOW), range(8)))
    assert results.count(True) == 1
    assert spent.spend("link", signature, NOW)  # another kind is another record


def test_pruning_forgets_only_the_hours_that_have_passed(storage: StorageClients) -> None:
    spent = SpentSignatures(storage.tables)
    old, current, later = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    assert spent.spend("request", old, NOW - dt.timedelta(hours=2))
    assert spent.spend("request", current, NOW)
    assert spent.spend("link", later, NOW + dt.timedelta(minutes=50))
    deleted = spent.prune(("request", "link"), NOW)
    assert deleted >= 1
    table = storage.tables.get_table_client(names.TABLE_SPENT_SIGNATURES)
    hours = {int(e["PartitionKey"].rsplit("-", 1)[1]) for e in table.list_entities(select=["PartitionKey"])}
    assert min(hours) >= int(NOW.timestamp()) // 3600  # nothing of a past hour is left
    assert not spent.spend("request", current, NOW)  # still spent: its hour has not passed
    assert not spent.spend("link", later, NOW + dt.timedelta(minutes=50))
    assert spent.spend("request", old, NOW - dt.timedelta(hours=2))  # forgotten (and refused as stale anyway)


class _AnswerLostOnce(RequestsTransport):
    """Storage inserts the row, but its answer never reaches us: a gateway answers 503 instead. The SDK retries a
    POST on a 503 (azure-core's RetryPolicy), and its retry meets the row its first attempt wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        if request.method == "POST" and response.status_code in (201, 204) and not self.lost:
            self.lost += 1
            response.status_code = response.internal_response.status_code = 503
        return response


def test_a_signature_whose_insert_the_sdk_retried_after_a_lost_answer_is_still_accepted(azurite: Azurite) -> None:
    """Review of i12, finding 9: the retry's 409 read as "already used", so a legitimate request was a 401."""
    transport = _AnswerLostOnce()
    tables = TableServiceClient.from_connection_string(
        azurite.connection_string, transport=transport, retry_backoff_factor=0.01
    )
    spent, signature = SpentSignatures(tables), uuid.uuid4().hex * 2
    assert spent.spend("request", signature, NOW)
    assert transport.lost == 1  # the first answer was lost, and the SDK retried
    assert not spent.spend("request", signature, NOW)  # a replay is still refused
