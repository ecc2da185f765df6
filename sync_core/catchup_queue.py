"""Requests for a delta catch-up, on the ``catchup-requests`` queue: whoever suspects missed mail asks here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from sync_core import names, telemetry
from sync_core.adapters.storage import StorageClients
from sync_core.clock import Clock
from sync_core.connections import Connection

# Queue clients are thread-safe; the timer's puts wait on the network. 10: azure-core's requests transport keeps
# 10 connections per host (requests' DEFAULT_POOLSIZE); more threads would open and drop connections.
PUT_CONCURRENCY = 10


class CatchupRequest(BaseModel):
    """A connection whose mail may have been missed: the delta catch-up consumes these."""

    model_config = ConfigDict(extra="ignore")
    user_id: str
    connection_id: str
    reason: str
    requested_at: dt.datetime
    correlation_id: str | None = None  # the path that asked (sync_core.telemetry): the catch-up joins its trace


class QueueAccess(Protocol):
    """What asking needs: storage and a clock (``Services``, or the operator's CLI without the app's secrets)."""

    @property
    def storage(self) -> StorageClients: ...

    @property
    def clock(self) -> Clock: ...


def request_catchup(connection: Connection, reason: str, services: QueueAccess) -> None:
    """Ask for a catch-up of ``connection``; the request never expires from the queue until it is done."""
    request_catchups([(connection, dt.timedelta(0))], reason, services)


def request_catchups(delayed: Sequence[tuple[Connection, dt.timedelta]], reason: str, services: QueueAccess) -> None:
    """Ask for a catch-up of each connection, after its delay; the puts go ``PUT_CONCURRENCY`` at a time (one at
    a time, 100,000 puts would outlast the timer's function timeout). A failed put fails the call once the
    others are done: the connections put so far are asked for, the timer's next run asks for the rest."""
    requested_at = services.clock.now()
    correlation = telemetry.correlation_id()  # read here: the pool's threads do not inherit the caller's context
    queue = services.storage.queue(names.QUEUE_CATCHUP)

    def put(item: tuple[Connection, dt.timedelta]) -> None:
        connection, delay = item
        request = CatchupRequest(
            user_id=connection.user_id,
            connection_id=connection.connection_id,
            reason=reason,
            requested_at=requested_at,
            correlation_id=correlation,
        )
        visible_in = int(delay.total_seconds())
        queue.send_message(request.model_dump_json(), visibility_timeout=visible_in or None, time_to_live=-1)

    if len(delayed) <= 1:
        for item in delayed:
            put(item)
        return
    with ThreadPoolExecutor(max_workers=PUT_CONCURRENCY, thread_name_prefix="catchup-put") as pool:
        for result in [pool.submit(put, item) for item in delayed]:
            result.result()
