"""The service's standing with a connected mailbox at Graph: its subscription, and whether its grant still holds.

Every use case that talks to a mailbox needs these (connecting, the workers, the catch-up, sending, upkeep), so
they live here rather than inside any one of those flows.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sync_core import events
from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable
from sync_core.connections import Connection, on_grant_lost
from sync_core.services import Services
from sync_core.subscriptions import Subscription, create_request, new_client_state, parse_iso, same_resource

log = logging.getLogger(__name__)


def create_subscription(
    graph: GraphClient, user_id: str, cid: str, tenant_id: str, user_object_id: str, services: Services
) -> Subscription:
    """Create the mailbox subscription; Graph validates both webhook URLs before answering 201."""
    client_state = new_client_state()
    body = create_request(user_object_id, services.settings.public_base_url, client_state, services.clock.now())
    try:
        created = graph.post_json("/subscriptions", body)
    except GraphError as exc:
        if exc.status != 409:
            raise
        # A subscription of ours for this mailbox is still alive at Graph (a disconnect that could not reach
        # Graph, an earlier answer that was lost): remove it, then create ours (CONTRACT.md section 1.1, 409).
        for existing in graph.get_json("/subscriptions").get("value", []):
            if same_resource(body["resource"], str(existing.get("resource", ""))):
                graph.request("DELETE", f"/subscriptions/{existing['id']}")
        created = graph.post_json("/subscriptions", body)
    subscription = Subscription(
        subscription_id=str(created["id"]),
        user_id=user_id,
        connection_id=cid,
        tenant_id=tenant_id,
        client_state=client_state,
        resource=str(created.get("resource", body["resource"])),
        expires_at=parse_iso(str(created["expirationDateTime"])),
    )
    services.subscriptions.save(subscription)
    return subscription


def sent_items_folder(graph: GraphClient, user_object_id: str) -> str:
    """The id of the mailbox's Sent Items folder, by its well-known name (CONTRACT.md section 6); folder ids never
    change (section 4), so a connection learns it once. Raises what Graph raises."""
    folder = graph.get_json(f"/users/{user_object_id}/mailFolders/sentitems", params={"$select": "id"})
    return str(folder.get("id") or "")


# After Graph refuses to name a connection's Sent Items folder for good, this process does not ask again for a
# while: otherwise every message of that mailbox would pay the refused request.
REFUSAL_KEPT = dt.timedelta(hours=1)
_refused_until: dict[str, dt.datetime] = {}
_refused_lock = threading.Lock()


def known_sent_items_folder(connection: Connection, graph: GraphClient, services: Services) -> str:
    """The connection's Sent Items folder id, asked of Graph (once) when it was not learnt at connect time; ""
    while Graph refuses to say (the user's own mail is then told by its address alone). A refusal is remembered
    for ``REFUSAL_KEPT`` in this process."""
    if connection.sent_items_folder_id:
        return connection.sent_items_folder_id
    now = services.clock.now()
    with _refused_lock:
        if _refused_until.get(connection.connection_id, now) > now:
            return ""
    try:
        folder = sent_items_folder(graph, connection.user_object_id)
    except GraphUnavailable:
        raise  # transient: the caller's retry asks again
    except GraphError as exc:
        log.warning("connection %s: Sent Items folder unknown (%s)", connection.connection_id, exc.code)
        with _refused_lock:
            _refused_until[connection.connection_id] = now + REFUSAL_KEPT
        return ""
    if folder:
        services.connections.learn_sent_items_folder(connection.user_id, connection.connection_id, folder)
    return folder


def drop_subscriptions(graph: GraphClient | None, cid: str, services: Services) -> None:
    """Delete the connection's subscriptions at Graph (404: already gone) and here."""
    for subscription in services.subscriptions.for_connection(cid):
        if graph is not None:
            try:
                graph.request("DELETE", f"/subscriptions/{subscription.subscription_id}")
            except GraphError as exc:
                if exc.status != 404:
                    raise
        services.subscriptions.delete(subscription.subscription_id)


def mark_grant_lost(connection: Connection, reason: str, services: Services) -> Connection:
    """R2: make a lost grant visible (needs_reconnect) instead of retrying forever.

    ``connection`` may be stale (read before a long Graph call): if the row changed since (a disconnect or a
    fresh reconnect), that newer state wins.
    """
    current = services.connections.get(connection.user_id, connection.connection_id)
    if current is None or current.updated_at != connection.updated_at:
        return current or connection
    lost = on_grant_lost(current, reason, services.clock.now())
    with events.recorded(services, events.connection_changed(current, lost)):
        services.connections.save([lost])
    return lost
