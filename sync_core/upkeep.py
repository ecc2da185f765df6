"""Self-healing subscriptions: renewal before expiry, and the documented answer to each lifecycle event.

A subscription is its mailbox's, shared by every connection that syncs the mailbox (R1), so each event is handled
once for the mailbox, with any of its connections' tokens (``mailbox.MemberTokens``), and whatever was missed is
caught up for each of those connections. CONTRACT.md section 3.2: ``reauthorizationRequired`` -> renew (a PATCH
reauthorizes too), then catch up through delta (changes during the pause are never notified);
``subscriptionRemoved`` -> create a new subscription, then catch up; ``missed`` -> catch up. A renewal answered
404 means Graph already dropped the subscription: recreate it. A lost grant marks that connection
``needs_reconnect`` once instead of retrying forever (R2), and the next connection's token is tried; Graph
throttling or outages raise so the queue retries.

The hourly timer (``schedule_renewals``) only queues a ``renew`` event for each subscription inside the renewal
window, soonest expiry first and ``RENEWALS_PER_SECOND`` apart: the lifecycle worker renews each one with the
queue's retries, and a run stays short however many mailboxes are due.

Only one subscription of ours can be alive at Graph for a mailbox (a second is a 409). Should two rows exist for it
(sign-ins that raced), the one Graph still renews is the mailbox's, and the other, gone at Graph, is forgotten
rather than re-created.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationError

from sync_core import names, telemetry
from sync_core.adapters.graph import GraphClient, GraphError, TokenUnavailable
from sync_core.catchup_queue import request_catchup
from sync_core.connections import Connection, Status
from sync_core.failures import Transient, malformed, parse_json
from sync_core.mailbox import MailboxLeft, create_subscription, mailbox_graph, renew_subscription, syncing_members
from sync_core.services import Services
from sync_core.subscriptions import RENEWAL_WINDOW, Subscription, renewal_delays

log = logging.getLogger(__name__)

KNOWN_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
RENEW = "renew"  # never from Graph: the renewal timer's, or an operator's (python -m sync_core.ops renew)


class LifecycleEvent(BaseModel):
    """A lifecycle notification after screening, as queued by the lifecycle webhook (or a renewal, by the timer)."""

    model_config = ConfigDict(extra="ignore")
    subscription_id: str
    event: str
    attempt: int = 0  # tries that failed transiently so far (``workers.run_lifecycle`` sends it back)
    correlation_id: str | None = None  # the path that queued it (sync_core.telemetry): kept when it is sent back


@dataclass
class UpkeepReport:
    renewed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    needs_reconnect: list[str] = field(default_factory=list)
    catchups: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass
class _Mailbox:
    """A subscription with what handling it needs: the connections that sync its mailbox and a client for it."""

    subscription: Subscription
    connections: list[Connection]
    graph: GraphClient


def _catch_up_each(mailbox: _Mailbox, reason: str, services: Services, report: UpkeepReport) -> None:
    """A catch-up for every connection of the mailbox that can run one (one whose grant is lost is asked for when
    its user reconnects), once per event."""
    for connection in mailbox.connections:
        current = services.connections.get(connection.user_id, connection.connection_id)
        if current is None or current.status is not Status.CONNECTED or current.connection_id in report.catchups:
            continue
        request_catchup(current, reason, services)
        report.catchups.append(current.connection_id)


def _forget(subscription: Subscription, services: Services, report: UpkeepReport) -> None:
    services.subscriptions.delete(subscription.subscription_id)
    report.dropped.append(subscription.subscription_id)


def _another_is_the_mailboxs(subscription: Subscription, services: Services) -> bool:
    """Whether the mailbox names another subscription, still recorded, as its own."""
    record = services.mailboxes.get(subscription.mailbox)
    if record is None or record.subscription_id in ("", subscription.subscription_id):
        return False
    return services.subscriptions.get(record.subscription_id) is not None


def _recreate(mailbox: _Mailbox, services: Services, report: UpkeepReport) -> None:
    """The subscription is gone at Graph: the mailbox gets a new one, unless another is the mailbox's already or
    nobody syncs the mailbox any more (its last user left while this was under way)."""
    old = mailbox.subscription
    if _another_is_the_mailboxs(old, services):
        _forget(old, services, report)  # a twin of a raced sign-in: the mailbox's own is renewed on its own
        return
    members = syncing_members(old.mailbox, services)
    if not members:
        _forget(old, services, report)
        return
    # Create first: if that fails (transiently), the old row stays, so the queue retry or the renewal timer
    # still sees this subscription and tries again; deleting first would lose it for good.
    try:
        new = create_subscription(
            mailbox.graph, members[0].tenant_id, members[0].user_object_id, services, old.subscription_id
        )
    except MailboxLeft:
        _forget(old, services, report)
        return
    except GraphError as exc:
        if exc.status != 400:
            raise
        # Graph answers 400 when its validation request to our webhook fails or times out (CONTRACT.md section
        # 2.1), e.g. on a cold start: worth retrying, not recording as final.
        raise Transient(f"re-creating the subscription was refused: {exc}") from exc
    if new.subscription_id != old.subscription_id:
        services.subscriptions.delete(old.subscription_id)
    report.recreated.append(new.subscription_id)
    # No notifications flowed between removal and re-creation: fetch that gap through delta, for every user.
    _catch_up_each(mailbox, "subscription_recreated", services, report)


def _renew(mailbox: _Mailbox, services: Services, report: UpkeepReport) -> None:
    subscription = mailbox.subscription
    try:
        renew_subscription(mailbox.graph, subscription, services)
    except GraphError as exc:
        if exc.status != 404:
            raise
        _recreate(mailbox, services, report)
        return
    # Alive at Graph, so it is the mailbox's (Graph keeps one of ours per mailbox): a record naming another (gone)
    # one is corrected; a mailbox whose last user left (no record) stays left.
    record = services.mailboxes.get(subscription.mailbox)
    if record is not None and record.subscription_id != subscription.subscription_id:
        services.mailboxes.point_at(subscription.mailbox, subscription.subscription_id, record.subscription_id)
    report.renewed.append(subscription.subscription_id)


def _act(subscription: Subscription, event: str, services: Services, report: UpkeepReport) -> None:
    connections = syncing_members(subscription.mailbox, services)
    if not connections:  # a leftover of the last disconnect: nobody's token to delete it with; Graph expires it
        _forget(subscription, services, report)
        return
    graph, tokens = mailbox_graph(connections, services)
    mailbox = _Mailbox(subscription, connections, graph)
    try:
        if event == RENEW:
            _renew(mailbox, services, report)
        elif event == "reauthorizationRequired":
            _renew(mailbox, services, report)
            # Graph paused notifications until now and does not replay them: fetch that window through delta.
            _catch_up_each(mailbox, "reauthorized", services, report)
        elif event == "subscriptionRemoved":
            _recreate(mailbox, services, report)
        elif event == "missed":
            _catch_up_each(mailbox, "missed", services, report)
    except TokenUnavailable:
        log.warning("mailbox %s: no connection of it has a usable grant", subscription.mailbox)
    finally:
        report.needs_reconnect.extend(c.connection_id for c in tokens.lost)


def schedule_renewals(services: Services, window: dt.timedelta = RENEWAL_WINDOW) -> list[str]:
    """The renewal timer: a ``renew`` event on the lifecycle queue for every subscription expiring within
    ``window``, soonest first, paced (``subscriptions.renewal_delays``); the ids queued."""
    due = sorted(services.subscriptions.expiring_before(services.clock.now() + window), key=lambda s: s.expires_at)
    queue = services.storage.queue(names.QUEUE_LIFECYCLE)
    for subscription, delay in zip(due, renewal_delays(len(due)), strict=True):
        event = LifecycleEvent(
            subscription_id=subscription.subscription_id, event=RENEW, correlation_id=telemetry.correlation_id()
        )
        queue.send_message(event.model_dump_json(exclude_defaults=True), visibility_timeout=delay)
    return [s.subscription_id for s in due]


def parse_lifecycle(raw: str) -> LifecycleEvent:
    try:
        return LifecycleEvent.model_validate(parse_json(raw, "lifecycle event"))
    except ValidationError as exc:
        raise malformed(exc, "lifecycle event") from None


def handle_lifecycle(raw: str, services: Services) -> UpkeepReport:
    """The lifecycle queue worker's use case. Transient Graph errors raise (``workers.run_lifecycle`` sends the
    event back after Graph's ``Retry-After``)."""
    event = parse_lifecycle(raw)
    report = UpkeepReport()
    if event.event not in (*KNOWN_EVENTS, RENEW):
        log.warning("ignoring unknown lifecycle event %r", event.event)  # future-proofing, CONTRACT 3.2
        return report
    subscription = services.subscriptions.get(event.subscription_id)
    if subscription is None:
        report.dropped.append(event.subscription_id)
        return report
    _act(subscription, event.event, services, report)
    return report
