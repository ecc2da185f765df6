"""Delta catch-up: the source of truth behind push notifications (SPEC: no lost messages).

Per connection and folder (Inbox, Sent Items), page the delta query from the stored deltaLink, and send every
message of a known conversation through the same worker path as a notification. CONTRACT.md section 7: follow
nextLink to the deltaLink and store it whole; ``410 Gone`` or ``syncStateNotFound``/``resyncRequired`` means start
over; replays happen, which the worker's idempotency absorbs. Runs on ``missed``, after a subscription is
recreated or reauthorized, after a lost grant is repaired, and on a timer, once a connection's adaptive interval
has passed (``catchup_schedule``).

A round without a deltaLink starts from a time (``$filter=receivedDateTime ge``, the one filter delta takes):
the connect time, so a first round never pages a whole mailbox; the reconnect time after an explicit disconnect;
after a reset, a day before the last completed round. The filter only saves work: later rounds still report
changes to older messages, so R8 is the worker's (``matching.decide`` ignores mail received before the
connection's ``sync_from``). Only ``$select`` what screening needs, once: the links carry it.

A filtered round returns at most 5,000 messages and ends with a deltaLink as if complete (CONTRACT.md section 7),
and every round of a filtered cursor is filtered (its links carry the filter). A round that reaches the cap may
have left mail out (a lost grant's backlog, a busy mailbox between runs), and no notification will bring it: the
round is logged as capped and its window is listed instead (``GET …/mailFolders/{folder}/messages`` with
``receivedDateTime ge {start} and receivedDateTime lt {round start}``, newest first: a list query has no such cap,
section 4 "List paging"), screened by conversation like delta. Which 5,000 Graph returns is not documented; the
window covers them all, so nothing depends on it. The window starts where a reset would (``resync_from``), never
before the connection's ``sync_from``.

A round of a huge mailbox (a first round without a start time, a resync) may not end within a function's
timeout: after each page its nextLink is saved with the round's start and count, and a run past
``RUN_BUDGET_SECONDS`` stops there and asks for another run, which goes on from that nextLink (so does the
queue's retry after a crash). Requests coalesce per connection (``catchup_runs``). A delta item carries its
``internetMessageId``: a message already stored in its conversation's thread costs a table read, not a GET.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from sync_core import catchup_runs, names
from sync_core.adapters.catchup_runs import RunStore
from sync_core.adapters.graph import GraphClient, GraphError, TokenUnavailable
from sync_core.adapters.ops_store import CursorStore, DeltaCursor, RoundPage
from sync_core.adapters.thread_store import MessageStore, ThreadStore
from sync_core.catchup_queue import CatchupRequest, request_catchup, request_catchups
from sync_core.catchup_schedule import CONTINUE, SCHEDULED, TIMER_PERIOD, due_requests
from sync_core.connections import Connection, Status
from sync_core.failures import Transient, classify, malformed, parse_json, record
from sync_core.inbound import MessageRef, Outcome, sync_message
from sync_core.mailbox import mark_grant_lost
from sync_core.services import Services
from sync_core.subscriptions import iso

log = logging.getLogger(__name__)

FOLDERS = ("inbox", "sentitems")
# internetMessageId: a message already stored needs no GET (a round replays a thread's whole conversation).
DELTA_SELECT = "id,conversationId,isDraft,internetMessageId"
PAGE_SIZE = "odata.maxpagesize=100"
RESET_CODES = frozenset({"syncStateNotFound", "resyncRequired"})
RESYNC_OVERLAP = dt.timedelta(days=1)
FILTERED_ROUND_CAP = 5000  # "$filter ... and then at most 5,000 messages" (CONTRACT.md section 7)
GAP_SELECT = "id,conversationId,isDraft,internetMessageId,receivedDateTime"
# functionTimeout is 5 minutes (host.json); a page may take a while after the budget is spent (100 GETs, waits).
RUN_BUDGET_SECONDS = 180.0
GAP_PAGE_SIZE = "500"  # list pages of 1 to 1,000 (section 4); ids only, so a large page is cheap


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


def _resumable_pages(
    connection: Connection, folder: str, cursor: DeltaCursor | None, graph: GraphClient
) -> Iterator[Any]:
    """The pages of a folder's round: from the saved nextLink of a round under way, else a new round."""
    if cursor and cursor.next_link:  # links are opaque and carry the query: followed as-is (section 7)
        return graph.pages(cursor.next_link, prefer=(PAGE_SIZE,))
    if cursor and cursor.delta_link:
        return graph.pages(cursor.delta_link, prefer=(PAGE_SIZE,))
    params = {"$select": DELTA_SELECT}
    if cursor and cursor.start_from:  # CONTRACT.md section 7: the one $filter delta supports
        params["$filter"] = f"receivedDateTime ge {iso(cursor.start_from)}"
    start = f"/users/{connection.user_object_id}/mailFolders/{folder}/messages/delta"
    return graph.pages(start, params=params, prefer=(PAGE_SIZE,))


def gap_start(cursor: DeltaCursor | None, sync_from: dt.datetime | None) -> dt.datetime | None:
    """Where the window of a capped round starts: where a reset would start over, never before ``sync_from``
    (R8). None: the whole folder (a cursor and a connection from before start times were kept)."""
    return max((m for m in (resync_from(cursor), sync_from) if m is not None), default=None)


def _screen(connection: Connection, item: dict[str, Any], services: Services, tally: Counter[str]) -> None:
    """One delta (or list) item: through the worker when its conversation is an Enrollio thread's."""
    if "@removed" in item or item.get("isDraft"):
        return
    # Screening here spares a GET for every message of conversations Enrollio never started (R4).
    thread_id = ThreadStore(services.storage.tables).by_conversation(connection, str(item.get("conversationId", "")))
    if not thread_id:
        tally["unmatched"] += 1
        return
    if _stored(thread_id, item, services):
        tally["already_stored"] += 1
        return
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


def _stored(thread_id: str, item: dict[str, Any], services: Services) -> bool:
    """Whether the item's message is in its conversation's thread already (a point read instead of a GET).

    Only a yes is trusted: an updated item may carry only its changed properties (section 7), and a message of
    the conversation may belong to another thread (matched by reference), so anything else goes through the
    worker, whose own check is the one that counts."""
    internet_message_id = item.get("internetMessageId")
    if not isinstance(internet_message_id, str) or not internet_message_id:
        return False
    return MessageStore(services.storage.tables, services.storage.blobs).has(thread_id, internet_message_id)


def _fill_gap(
    connection: Connection,
    folder: str,
    window: tuple[dt.datetime | None, dt.datetime],
    graph: GraphClient,
    services: Services,
    tally: Counter[str],
) -> None:
    """List the window a capped round may have left out, newest first, and screen it like delta."""
    start, end = window
    received = [f"receivedDateTime ge {iso(start)}"] if start else []
    params = {
        "$filter": " and ".join([*received, f"receivedDateTime lt {iso(end)}"]),
        "$orderby": "receivedDateTime desc",  # ordered by what the filter names first (section 4)
        "$select": GAP_SELECT,
        "$top": GAP_PAGE_SIZE,
    }
    path = f"/users/{connection.user_object_id}/mailFolders/{folder}/messages"
    try:
        for page in graph.pages(path, params=params):
            for item in page.get("value", []):
                _screen(connection, item, services, tally)
    except GraphError as exc:
        failure = classify(exc)
        if isinstance(failure, Transient):
            raise
        # Graph refuses the list for good: say so where operators look (a resync of the connection retries it).
        gap = {"connection_id": connection.connection_id, "folder": folder, "window": params["$filter"]}
        record(names.QUEUE_CATCHUP, json.dumps(gap), failure, services)
        tally["gap_failed"] += 1


def _round(
    connection: Connection,
    folder: str,
    graph: GraphClient,
    services: Services,
    tally: Counter[str],
    deadline: float = math.inf,
    completed: list[dt.datetime] | None = None,
) -> bool:
    """One folder's round, from where it stopped; False when it paused out of time (it resumes from its nextLink).
    A round that completes adds when it started (maybe in an earlier run) to ``completed``."""
    cursors = CursorStore(services.storage.tables)
    cursor = cursors.get(connection.connection_id, folder)
    filtered = cursor is not None and cursor.start_from is not None  # its links carry the filter
    resumed = cursor is not None and bool(cursor.next_link)
    started = (cursor.round_started if cursor and resumed else None) or services.clock.now()
    count = cursor.round_count if cursor and resumed else 0
    delta_link = None
    if resumed:
        tally["resumed_rounds"] += 1
    for page in _resumable_pages(connection, folder, cursor, graph):
        for item in page.get("value", []):
            count += "@removed" not in item
            _screen(connection, item, services, tally)
        delta_link = page.get("@odata.deltaLink") or delta_link
        next_link = page.get("@odata.nextLink")
        if next_link and not delta_link:
            cursors.save_page(cursor, connection.connection_id, folder, RoundPage(next_link, started, count))
            if time.monotonic() >= deadline:
                return False
    if filtered and count >= FILTERED_ROUND_CAP:
        start = gap_start(cursor, connection.sync_from)
        log.warning(
            "%s/%s: a filtered delta round returned %d messages, Graph's cap: listing mail received from %s to %s",
            connection.connection_id,
            folder,
            count,
            iso(start) if start else "the start",
            iso(started),
        )
        tally["capped_rounds"] += 1
        _fill_gap(connection, folder, (start, started), graph, services, tally)
    if delta_link:
        cursors.save(connection.connection_id, folder, delta_link)
    if completed is not None:
        completed.append(started)
    return True


def start_cursors(connection_id: str, moment: dt.datetime, services: Services) -> None:
    """Every folder's next round starts afresh from ``moment``: mail received before it never syncs (R8)."""
    cursors = CursorStore(services.storage.tables)
    for folder in FOLDERS:
        cursors.start_from(connection_id, folder, moment)


def catch_up(request: CatchupRequest, services: Services, budget: float = RUN_BUDGET_SECONDS) -> dict[str, int]:
    """One catch-up run for a connection, unless another run answers the request (``catchup_runs``); returns what
    happened to the messages it saw. Past ``budget`` seconds it stops after a page, and asks for a run that goes
    on from there."""
    tally: Counter[str] = Counter()
    connection = services.connections.get(request.user_id, request.connection_id)
    if connection is None or not connection.syncs:
        return dict(tally)
    admission, claimed = catchup_runs.claim(request, services)
    if claimed is None:
        log.info("catch-up of %s (%s) dropped: %s", request.connection_id, request.reason, admission.value)
        tally[f"dropped: {admission.value}"] += 1
        return dict(tally)
    started = services.clock.now()
    how = catchup_runs.RunEnd.FAILED
    rounds: list[dt.datetime] = []  # when each round this run completed started: a resumed one, in an earlier run
    try:
        how = _run_rounds(connection, services, tally, time.monotonic() + budget, rounds)
    finally:
        covers_from = min([started, *rounds])
        recovered = tally[Outcome.STORED.value] + tally[Outcome.SKIPPED.value]  # what push had missed
        again = catchup_runs.end(
            connection.connection_id, claimed, covers_from, how, services, request.reason, recovered
        )
    if again:
        reason = CONTINUE if how is catchup_runs.RunEnd.PAUSED else "requested during the last run"
        request_catchup(connection, reason, services)
        tally[f"re-queued: {reason}"] += 1
    return dict(tally)


def _run_rounds(
    connection: Connection, services: Services, tally: Counter[str], deadline: float, rounds: list[dt.datetime]
) -> catchup_runs.RunEnd:
    graph = services.graph_for(connection)
    cursors = CursorStore(services.storage.tables)
    try:
        for folder in FOLDERS:
            try:
                done = _round(connection, folder, graph, services, tally, deadline, rounds)
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
                done = _round(connection, folder, graph, services, tally, deadline, rounds)
            if not done:
                tally["paused"] += 1
                return catchup_runs.RunEnd.PAUSED
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        tally["needs_reconnect"] += 1
    return catchup_runs.RunEnd.COMPLETED


def schedule_catchups(services: Services, spread: dt.timedelta | None = None, tick: dt.datetime | None = None) -> int:
    """The catch-up timer: a request for each connected connection whose catch-up is due (``catchup_schedule``),
    so a dropped notification is recovered; each waits its own delay within ``spread`` (``CATCHUP_SPREAD_SECONDS``
    by default), and the requests are put several at a time. Connections that need reconnecting have no token to
    catch up with; reconnecting asks for their catch-up. ``tick``: the timer's run as if at that time (now by
    default). Returns how many were requested."""
    tick = tick or services.clock.now()
    connected = {c.connection_id: c for c in services.connections.all_syncing() if c.status is Status.CONNECTED}
    if spread is None:  # the quarter hour until the timer's next run, unless set shorter
        spread = min(dt.timedelta(seconds=services.settings.catchup_spread_seconds), TIMER_PERIOD)
    due = due_requests(list(connected), RunStore(services.storage.tables).due_times(), tick, spread)
    request_catchups([(connected[c], delay) for c, delay in due], SCHEDULED, services)
    log.info("catch-up timer: %d of %d connections due", len(due), len(connected))
    return len(due)


def parse_request(raw: str) -> CatchupRequest:
    try:
        return CatchupRequest.model_validate(parse_json(raw, "catch-up request"))
    except ValidationError as exc:
        raise malformed(exc, "catch-up request") from None
