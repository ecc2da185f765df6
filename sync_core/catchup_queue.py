"""Requests for a delta catch-up, on the ``catchup-requests`` queue: whoever suspects missed mail asks here."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from sync_core import names, telemetry
from sync_core.adapters.storage import StorageClients
from sync_core.clock import Clock
from sync_core.connections import Connection


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
    request = CatchupRequest(
        user_id=connection.user_id,
        connection_id=connection.connection_id,
        reason=reason,
        requested_at=services.clock.now(),
        correlation_id=telemetry.correlation_id(),
    )
    services.storage.queue(names.QUEUE_CATCHUP).send_message(request.model_dump_json(), time_to_live=-1)
