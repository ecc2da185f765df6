"""Delta catch-up: the source of truth behind push notifications (SPEC: no lost messages).

Per connection and folder (Inbox, Sent Items), page the delta query from the stored deltaLink, and send every
message of a known conversation through the same worker path as a notification. CONTRACT.md section 7: follow
nextLink to the deltaLink and store it whole; ``410 Gone`` or ``syncStateNotFound``/``resyncRequired`` means start
over; replays happen, which the worker's idempotency absorbs. Runs on ``missed``, after a subscription is
recreated or reauthorized, after a lost grant is repaired, and on a timer.

A round without a deltaLink starts from a time (``$filter=receivedDateTime ge``, the one filter delta takes):
the connect time, so a first round never pages a whole mailbox; the reconnect time after an explicit disconnect;
after a reset, a day before the last completed round. The filter only saves work: later rounds still report
changes to older messages, so R8 is the worker's (``matching.decide`` ignores mail received before the
connection's ``sync_from``). Only ``$select`` what screening needs, once: the links carry it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from sync_core import names
from sync_core.adapters.graph import GraphClient, GraphError, TokenUnavailable
from sync_core.adapters.ops_store import CursorStore, DeltaCursor
from sync_core.adapters.thread_store import ThreadStore
from sync_core.catchup_queue import CatchupRequest, request_catchup
from sync_core.connections import Connection, Status
from sync_core.failures import Transient, classify, malformed, parse_json, record
from sync_core.inbound import MessageRef, sync_message
from sync_core.mailbox import mark_grant_lost
from sync_core.services import Services
from sync_core.subscriptions import iso

log = logging.getLogger(__name__)

FOLDERS = ("inbox", "sentitems")
DELTA_SELECT = "id,conversationId,isDraft"
PAGE_SIZE = "odata.maxpagesize=100"
RESET_CODES = frozenset({"syncStateNotFound", "resyncRequired"})
RESYNC_OVERLAP = dt.timedelta(days=1)


def resync_from(cursor: DeltaCursor | None) -> dt.datetime | None:
    """Where a folder's delta starts over after Graph reset its token (410, ``syncStateNotFound``).

    From the cursor's start time (R8: never before a reconnect), or from a day before the last completed round,
    whichever is later: that round saw everything older, and a day covers Graph's processing delays (CONTRACT.md
    section 7). A filtered round returns at most 5,000 messages, so a resync never reaches back further than it
    must. None: the whole folder (a cursor from before start times were kept).
    """
    if cursor is None:
        return None
    moments = [cursor.start_from] if cursor.start_from else []
    if cursor.delta_link and cursor.saved_at:
        moments.append(cursor.saved_at - RESYNC_OVERLAP)
    return max(moments, default=None)


def _pages(connection: Connection, folder: str, cursor: DeltaCursor | None, graph: GraphClient) -> Iterator[Any]:
    if cursor and cursor.delta_link:
        return graph.pages(cursor.delta_link, prefer=(PAGE_SIZE,))
    params = {"$select": DELTA_SELECT}
    if cursor and cursor.start_from:  # CONTRACT.md section 7: the one $filter delta supports
        params["$filter"] = f"receivedDateTime ge {iso(cursor.start_from)}"
    start = f"/users/{connection.user_object_id}/mailFolders/{folder}/messages/delta"
    return graph.pages(start, params=params, prefer=(PAGE_SIZE,))


def _round(connection: Connection, folder: str, graph: GraphClient, services: Services, tally: Counter[str]) -> None:
    cursors, threads = CursorStore(services.storage.tables), ThreadStore(services.storage.tables)
    delta_link = None
    for page in _pages(connection, folder, cursors.get(connection.connection_id, folder), graph):
        for item in page.get("value", []):
            if "@removed" in item or item.get("isDraft"):
                continue
            # Screening here spares a GET for every message of conversations Enrollio never started (R4).
            if not threads.by_conversation(connection, str(item.get("conversationId", ""))):
                tally["unmatched"] += 1
                continue
            ref = MessageRef(user_id=connection.user_id, connection_id=connection.connection_id, message_id=item["id"])
            try:
                tally[sync_message(ref, services).outcome.value] += 1
            except Exception as exc:
                failure = classify(exc)
                if isinstance(failure, Transient):
                    raise  # the whole run is retried, from the same cursor
                # Permanent for this message: record it and go on, or every run would stop here forever.
                record(names.QUEUE_CATCHUP, ref.model_dump_json(), failure, services)
                tally["failed"] += 1
        delta_link = page.get("@odata.deltaLink") or delta_link
    if delta_link:
        cursors.save(connection.connection_id, folder, delta_link)


def start_cursors(connection_id: str, moment: dt.datetime, services: Services) -> None:
    """Every folder's next round starts afresh from ``moment``: mail received before it never syncs (R8)."""
    cursors = CursorStore(services.storage.tables)
    for folder in FOLDERS:
        cursors.start_from(connection_id, folder, moment)


def catch_up(request: CatchupRequest, services: Services) -> dict[str, int]:
    """One catch-up run for a connection; returns what happened to the messages it saw."""
    tally: Counter[str] = Counter()
    connection = services.connections.get(request.user_id, request.connection_id)
    if connection is None or not connection.syncs:
        return dict(tally)
    graph = services.graph_for(connection)
    cursors = CursorStore(services.storage.tables)
    try:
        for folder in FOLDERS:
            try:
                _round(connection, folder, graph, services, tally)
            except GraphError as exc:
                if exc.status != 410 and exc.code not in RESET_CODES:
                    raise
                log.info(
                    "delta token for %s/%s reset by Graph (%s): full resync", connection.connection_id, folder, exc.code
                )
                restart = resync_from(cursors.get(connection.connection_id, folder))
                if restart is None:
                    cursors.forget_folder(connection.connection_id, folder)
                else:
                    cursors.start_from(connection.connection_id, folder, restart)
                tally["resets"] += 1
                _round(connection, folder, graph, services, tally)
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        tally["needs_reconnect"] += 1
    return dict(tally)


def schedule_catchups(services: Services) -> int:
    """The catch-up timer: one request per connected connection, so a dropped notification is recovered.
    Connections that need reconnecting have no token to catch up with; reconnecting asks for their catch-up."""
    connected = [c for c in services.connections.all_syncing() if c.status is Status.CONNECTED]
    for connection in connected:
        request_catchup(connection, "scheduled", services)
    return len(connected)


def parse_request(raw: str) -> CatchupRequest:
    try:
        return CatchupRequest.model_validate(parse_json(raw, "catch-up request"))
    except ValidationError as exc:
        raise malformed(exc, "catch-up request") from None
