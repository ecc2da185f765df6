"""The service's standing with a connected mailbox at Graph: its one subscription, the connections that share it,
and whether each connection's grant still holds.

Every use case that talks to a mailbox needs these (connecting, the workers, the catch-up, sending, upkeep), so
they live here rather than inside any one of those flows.

A mailbox (tenant + user object id, ``connections.mailbox_key``) may be connected by several Enrollio users (a
shared front-desk account, R1). Graph takes one subscription of this app per mailbox and refuses a second with 409
(CONTRACT.md section 1.1), so the mailbox has one, created by whoever connected it first and joined by the others
(``Mailboxes``: the mailbox's subscription, and a row per connection that syncs it). It is deleted at Graph only
when no connection syncs the mailbox any more. Calls about the mailbox as a whole (renew, re-create or delete its
subscription; the worker's GET of a notified message) may use any of its connections' tokens: they are delegated
tokens of the same Microsoft user and app. ``MemberTokens`` tries them in turn; a connection whose grant turns out
lost is marked ``needs_reconnect`` (only that one) and the next is tried.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import replace

from sync_core import events
from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, TokenSource, TokenUnavailable
from sync_core.connections import Connection, Status, mailbox_key, on_grant_lost
from sync_core.services import Services
from sync_core.subscriptions import (
    Subscription,
    create_request,
    new_client_state,
    parse_iso,
    renew_request,
    same_resource,
    spread,
)

log = logging.getLogger(__name__)


# -- the connections that share a mailbox ------------------------------------------------------------------------


def syncing_members(mailbox: str, services: Services) -> list[Connection]:
    """The connections that sync ``mailbox`` (R8: a disconnected one does not), in a stable order: one partition
    query for the member rows, then a point read of each connection."""
    found = []
    for member in services.mailboxes.members(mailbox):
        connection = services.connections.get(member.user_id, member.connection_id)
        if connection is not None and connection.syncs and connection.mailbox == mailbox:
            found.append(connection)
    return found


def _anyone_else_syncs(mailbox: str, services: Services) -> bool:
    """Whether a connection still syncs the mailbox, or is being connected to it (its member row is written before
    its connection row, so a member without a connection row is a sign-in under way)."""
    for member in services.mailboxes.members(mailbox):
        connection = services.connections.get(member.user_id, member.connection_id)
        if connection is None or connection.syncs:
            return True
    return False


class MemberTokens:
    """Tokens for calls about a whole mailbox: the first of its connected connections whose grant holds.

    A connection whose token turns out unavailable is marked ``needs_reconnect`` (``lost``) and the next one is
    asked, with the same ``force_refresh``: after a 401 the next member's cached token is as suspect as the first's.
    Raises ``TokenUnavailable`` once none is left."""

    def __init__(self, members: list[Connection], services: Services) -> None:
        self._candidates = [m for m in members if m.status is Status.CONNECTED]
        self._services = services
        self._source: TokenSource | None = None
        self.lost: list[Connection] = []

    def __call__(self, force_refresh: bool = False) -> str:
        while self._candidates:
            if self._source is None:
                self._source = self._services.tokens_for(self._candidates[0])
            try:
                return self._source(force_refresh=force_refresh)
            except TokenUnavailable as exc:
                gone = self._candidates.pop(0)
                self._source = None
                log.warning("connection %s: grant lost (%s); trying another of its mailbox", gone.connection_id, exc)
                self.lost.append(mark_grant_lost(gone, str(exc), self._services))
        raise TokenUnavailable("no connection of this mailbox has a usable grant")


def mailbox_graph(members: list[Connection], services: Services) -> tuple[GraphClient, MemberTokens]:
    """A Graph client for the mailbox ``members`` (at least one) share, with ``MemberTokens``."""
    tokens = MemberTokens(members, services)
    return services.graph(tokens, members[0].user_object_id), tokens


# -- its subscription --------------------------------------------------------------------------------------------


def create_subscription(graph: GraphClient, tenant_id: str, user_object_id: str, services: Services) -> Subscription:
    """Create the mailbox's subscription (Graph validates both webhook URLs before answering 201) and record it as
    the mailbox's.

    A 409 means Graph holds one of ours for this mailbox already (CONTRACT.md section 1.1): one recorded here (a
    row from before subscriptions were per mailbox, or a sign-in that raced this one) is adopted and renewed; one
    unknown here (a disconnect that could not reach Graph, an answer that was lost) cannot be trusted, as its
    clientState is unknown: it is deleted and ours created. The list this takes is the only ``GET /subscriptions``
    the service makes (Graph allows 40 per 20 s per app, section 1.4): it happens only after a 409."""
    mailbox = mailbox_key(tenant_id, user_object_id)
    client_state = new_client_state()
    now = services.clock.now()
    body = create_request(user_object_id, services.settings.public_base_url, client_state, now, spread())
    try:
        created = graph.post_json("/subscriptions", body)
    except GraphError as exc:
        if exc.status != 409:
            raise
        for existing in graph.get_json("/subscriptions").get("value", []):
            if not same_resource(body["resource"], str(existing.get("resource", ""))):
                continue
            known = services.subscriptions.get(str(existing["id"]))
            if known is not None:
                join_former_owner(known, services)
                adopted = replace(known, mailbox=mailbox, tenant_id=tenant_id, user_id="", connection_id="")
                try:
                    return _recorded(renew_subscription(graph, adopted, services), services)
                except GraphError as gone:
                    if gone.status != 404:
                        raise
                    services.subscriptions.delete(known.subscription_id)  # gone since the list: create ours
                    continue
            _delete_at_graph(graph, str(existing["id"]))
        created = graph.post_json("/subscriptions", body)
    return _recorded(
        Subscription(
            subscription_id=str(created["id"]),
            mailbox=mailbox,
            tenant_id=tenant_id,
            client_state=client_state,
            resource=str(created.get("resource", body["resource"])),
            expires_at=parse_iso(str(created["expirationDateTime"])),
        ),
        services,
    )


def join_former_owner(subscription: Subscription, services: Services) -> Connection | None:
    """A row from before subscriptions were per mailbox names the one connection it served: that connection, when it
    still syncs, becomes a member of its mailbox, so it keeps receiving the mailbox's mail once the row is the
    mailbox's. None when the row names none, or one that no longer syncs."""
    if not subscription.connection_id:
        return None
    connection = services.connections.get(subscription.user_id, subscription.connection_id)
    if connection is None or not connection.syncs:
        return None
    services.mailboxes.join(connection.mailbox, connection.user_id, connection.connection_id)
    return connection


def _recorded(subscription: Subscription, services: Services) -> Subscription:
    """The subscription saved, and named as its mailbox's."""
    services.subscriptions.save(subscription)
    services.mailboxes.point_at(subscription.mailbox, subscription.subscription_id)
    return subscription


def renew_subscription(graph: GraphClient, subscription: Subscription, services: Services) -> Subscription:
    """Renew for a new (spread) lifetime, which reauthorizes too (CONTRACT.md section 1.3), and save the expiry
    Graph granted. Raises ``GraphError``: 404 when Graph no longer has it."""
    answer = graph.request(
        "PATCH",
        f"/subscriptions/{subscription.subscription_id}",
        json=renew_request(services.clock.now(), spread()),
    ).json()
    renewed = replace(subscription, expires_at=parse_iso(str(answer["expirationDateTime"])))
    services.subscriptions.save(renewed)
    return renewed


def subscribe(graph: GraphClient, tenant_id: str, user_object_id: str, services: Services) -> Subscription:
    """The mailbox's subscription, alive at Graph, for a connection signing in to it: the one it has, renewed (a
    PATCH proves it alive, reauthorizes it and gives it a fresh lifetime; no second subscription, which Graph
    would refuse), else a new one. Raises ``GraphError``."""
    current = services.subscriptions.of_mailbox(mailbox_key(tenant_id, user_object_id))
    if current is not None:
        try:
            return renew_subscription(graph, current, services)
        except GraphError as exc:
            if exc.status != 404:
                raise
            services.subscriptions.delete(current.subscription_id)  # Graph dropped it: a new one below
    return create_subscription(graph, tenant_id, user_object_id, services)


def _delete_at_graph(graph: GraphClient, subscription_id: str) -> None:
    try:
        graph.request("DELETE", f"/subscriptions/{subscription_id}")
    except GraphError as exc:
        if exc.status != 404:  # 404: gone already
            raise


def leave_mailbox(connection: Connection, services: Services) -> None:
    """R8: the connection no longer syncs its mailbox. The mailbox's subscription stays while another connection
    syncs it (R1); after the last one it is deleted at Graph with this connection's token, or, when Graph cannot
    be reached with it, only here (its notifications are then refused as unknown and Graph expires it; a later
    sign-in's create meets its 409 and replaces it)."""
    mailbox = connection.mailbox
    services.mailboxes.leave(mailbox, connection.connection_id)
    if _anyone_else_syncs(mailbox, services):
        return
    subscription = services.subscriptions.of_mailbox(mailbox)
    if subscription is not None:
        try:
            _delete_at_graph(services.graph_for(connection), subscription.subscription_id)
        except (TokenUnavailable, GraphError) as exc:
            log.warning("mailbox %s: its subscription was forgotten here only (%s)", mailbox, exc)
        services.subscriptions.delete(subscription.subscription_id)
    services.mailboxes.forget(mailbox)


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
