"""Self-healing subscriptions: renewal before expiry, and the documented answer to each lifecycle event.

CONTRACT.md section 3.2: ``reauthorizationRequired`` -> renew (a PATCH reauthorizes too), then catch up through
delta (changes during the pause are never notified); ``subscriptionRemoved`` -> create a new subscription, then
catch up through delta; ``missed`` -> catch up through delta. A renewal answered 404 means Graph already dropped
the subscription: recreate it. A lost grant marks the connection ``needs_reconnect`` once instead of retrying
forever (R2); Graph throttling or outages raise so the queue or the next timer run retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace

from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, ValidationError

from sync_core.adapters.graph import GraphClient, GraphError, TokenUnavailable
from sync_core.catchup_queue import request_catchup
from sync_core.connections import Connection
from sync_core.failures import Transient, malformed, parse_json
from sync_core.mailbox import create_subscription, mark_grant_lost
from sync_core.services import Services
from sync_core.subscriptions import RENEWAL_WINDOW, Subscription, parse_iso, renew_request

log = logging.getLogger(__name__)

KNOWN_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
RENEW = "renew"  # never from Graph: an operator's request (python -m sync_core.ops renew), as the timer renews


class LifecycleEvent(BaseModel):
    """A lifecycle notification after screening, as queued by the lifecycle webhook."""

    model_config = ConfigDict(extra="ignore")
    subscription_id: str
    event: str


@dataclass
class UpkeepReport:
    renewed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    needs_reconnect: list[str] = field(default_factory=list)
    catchups: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _catch_up(connection: Connection, reason: str, services: Services, report: UpkeepReport) -> None:
    request_catchup(connection, reason, services)
    report.catchups.append(connection.connection_id)


def _connection_of(subscription: Subscription, services: Services) -> Connection | None:
    connection = services.connections.get(subscription.user_id, subscription.connection_id)
    if connection is None or not connection.syncs:
        services.subscriptions.delete(subscription.subscription_id)  # a leftover of a disconnect
        return None
    return connection


def _recreate(
    old: Subscription, connection: Connection, graph: GraphClient, services: Services, report: UpkeepReport
) -> None:
    # Create first: if that fails (transiently), the old row stays, so the queue retry or the renewal timer
    # still sees this subscription and tries again; deleting first would lose it for good.
    try:
        new = create_subscription(
            graph,
            connection.user_id,
            connection.connection_id,
            connection.tenant_id,
            connection.user_object_id,
            services,
        )
    except GraphError as exc:
        if exc.status != 400:
            raise
        # Graph answers 400 when its validation request to our webhook fails or times out (CONTRACT.md section
        # 2.1), e.g. on a cold start: worth retrying, not recording as final.
        raise Transient(f"re-creating the subscription was refused: {exc}") from exc
    services.subscriptions.delete(old.subscription_id)
    report.recreated.append(new.subscription_id)
    # No notifications flowed between removal and re-creation: fetch that gap through delta.
    _catch_up(connection, "subscription_recreated", services, report)


def _renew(
    old: Subscription, connection: Connection, graph: GraphClient, services: Services, report: UpkeepReport
) -> None:
    try:
        answer = graph.request(
            "PATCH", f"/subscriptions/{old.subscription_id}", json=renew_request(services.clock.now())
        ).json()
    except GraphError as exc:
        if exc.status != 404:
            raise
        _recreate(old, connection, graph, services, report)
        return
    services.subscriptions.save(replace(old, expires_at=parse_iso(str(answer["expirationDateTime"]))))
    report.renewed.append(old.subscription_id)


def _act(subscription: Subscription, event: str, services: Services, report: UpkeepReport) -> None:
    connection = _connection_of(subscription, services)
    if connection is None:
        report.dropped.append(subscription.subscription_id)
        return
    graph = services.graph_for(connection)
    try:
        if event == "renew":
            _renew(subscription, connection, graph, services, report)
        elif event == "reauthorizationRequired":
            _renew(subscription, connection, graph, services, report)
            # Graph paused notifications until now and does not replay them: fetch that window through delta.
            if connection.connection_id not in report.catchups:  # a re-created subscription asked already
                _catch_up(connection, "reauthorized", services, report)
        elif event == "subscriptionRemoved":
            _recreate(subscription, connection, graph, services, report)
        elif event == "missed":
            _catch_up(connection, "missed", services, report)
    except TokenUnavailable as exc:
        mark_grant_lost(connection, str(exc), services)
        report.needs_reconnect.append(connection.connection_id)


def renew_subscriptions(services: Services, window: dt.timedelta = RENEWAL_WINDOW) -> UpkeepReport:
    """The renewal timer: renew every subscription expiring within ``window``; one failure doesn't stop the rest."""
    report = UpkeepReport()
    for subscription in services.subscriptions.expiring_before(services.clock.now() + window):
        try:
            _act(subscription, "renew", services, report)
        except (GraphError, Transient, AzureError, OSError) as exc:  # whatever it was, the next timer run tries again
            log.warning("renewal of %s failed: %s", subscription.subscription_id, exc)
            report.failed[subscription.subscription_id] = str(exc)
    return report


def handle_lifecycle(raw: str, services: Services) -> UpkeepReport:
    """The lifecycle queue worker. Transient Graph errors raise, so the queue retries the event."""
    try:
        event = LifecycleEvent.model_validate(parse_json(raw, "lifecycle event"))
    except ValidationError as exc:
        raise malformed(exc, "lifecycle event") from None
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
