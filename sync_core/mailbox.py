"""The service's standing with a connected mailbox at Graph: its one subscription, the connections that share it,
and whether each connection's grant still holds.

Every use case that talks to a mailbox needs these (connecting, the workers, the catch-up, sending, upkeep), so
they live here rather than inside any one of those flows.

A mailbox (tenant + user object id, ``connections.mailbox_key``) may be connected by several Enrollio users (a
shared front-desk account, R1). Graph takes one subscription of this app per mailbox and refuses a second with 409
(CONTRACT.md section 1.1), so the mailbox has one, created by whoever connected it first and joined by the others
(``Mailboxes``: the mailbox's subscription, and a row per connection that syncs it). It is deleted at Graph only
when no connection syncs the mailbox any more.

Sign-ins, disconnects and renewals of one mailbox may run at once on several instances. A sign-in's member row
is written (with a touch of the mailbox row, one transaction) before it looks at the subscription, and counts for
``SIGN_IN_LASTS`` whatever its connection row says; the last user leaving deletes the mailbox row only if it is
unchanged since it saw nobody else (``MailboxStore.forget``), and a new subscription is named the mailbox's only
in place of none, itself or the one it replaces (``MailboxStore.point_at``). So whichever order they run in, a
mailbox someone syncs ends with one live subscription, and one nobody syncs with none.

Calls about the mailbox as a whole (renew, re-create or delete its
subscription; the worker's GET of a notified message) may use any of its connections' tokens: they are delegated
tokens of the same Microsoft user and app. ``MemberTokens`` tries them in turn; a connection whose grant turns out
lost is marked ``needs_reconnect`` (only that one) and the next is tried.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, replace

from sync_core import events
from sync_core.adapters.connection_store import Member
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


# How long a member row counts whatever its connection row says: a sign-in writes it before its subscription is
# looked at and its connection row says "connected" only at its end, and the callback cannot run longer than
# host.json's functionTimeout (5 minutes). A row older than that without a syncing connection is a sign-in that
# died half-way (its host killed): it no longer keeps the subscription alive, and the last user leaving removes it.
SIGN_IN_LASTS = dt.timedelta(minutes=5)


def _still_member(member: Member, mailbox: str, now: dt.datetime, services: Services) -> bool:
    """Whether the member row stands for a connection that syncs the mailbox or is being connected to it (a first
    sign-in, or one after a disconnect, whose connection row says so only once it is done)."""
    if member.joined_at is not None and now - member.joined_at < SIGN_IN_LASTS:
        return True
    connection = services.connections.get(member.user_id, member.connection_id)
    return connection is not None and connection.syncs and connection.mailbox == mailbox


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


class MailboxLeft(GraphError):
    """The subscription just made could not be recorded as its mailbox's because the mailbox's last user left
    meanwhile; it was deleted again."""

    def __init__(self, mailbox: str) -> None:
        super().__init__(409, "mailboxLeft", f"mailbox {mailbox}: its last user left while a subscription was made")


def create_subscription(
    graph: GraphClient, tenant_id: str, user_object_id: str, services: Services, replacing: str = ""
) -> Subscription:
    """Create the mailbox's subscription (Graph validates both webhook URLs before answering 201) and record it as
    the mailbox's, in place of ``replacing`` (the one Graph dropped) when given.

    A 409 means Graph holds one of ours for this mailbox already (CONTRACT.md section 1.1): the one the mailbox
    names (a sign-in that raced this one recorded it meanwhile) is renewed and kept; any other (a disconnect that
    could not reach Graph, an answer that was lost, a sign-in that raced this one and has not recorded it) cannot
    be trusted, as its clientState may be unknown: it is deleted and ours created. The list this takes is the only
    ``GET /subscriptions`` the service makes (Graph allows 40 per 20 s per app, section 1.4): it happens only after
    a 409. Should another subscription have become the mailbox's by the time this one is recorded (two first
    sign-ins at once: the other deleted this one at Graph after its own 409), that one is returned and this one
    forgotten. Raises ``GraphError``; ``MailboxLeft`` when the mailbox's last user left meanwhile."""
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
            if (named := _the_mailboxs(mailbox, str(existing["id"]), services)) is not None:
                try:
                    return renew_subscription(graph, named, services)
                except GraphError as gone:
                    if gone.status != 404:
                        raise
                    continue  # gone since the list: create ours
            _delete_at_graph(graph, str(existing["id"]))
        created = graph.post_json("/subscriptions", body)
    subscription = Subscription(
        subscription_id=str(created["id"]),
        mailbox=mailbox,
        tenant_id=tenant_id,
        client_state=client_state,
        resource=str(created.get("resource", body["resource"])),
        expires_at=parse_iso(str(created["expirationDateTime"])),
    )
    return _recorded(subscription, replacing, graph, services)


def _the_mailboxs(mailbox: str, subscription_id: str, services: Services) -> Subscription | None:
    """The subscription, when it is recorded here as the mailbox's own."""
    record = services.mailboxes.get(mailbox)
    if record is None or record.subscription_id != subscription_id:
        return None
    return services.subscriptions.get(subscription_id)


def _recorded(subscription: Subscription, replacing: str, graph: GraphClient, services: Services) -> Subscription:
    """The new subscription saved and named as its mailbox's, unless the mailbox names another by now: then that
    one, and this one is deleted (Graph keeps one of ours per mailbox: this one is gone at Graph already, or the
    mailbox's last user left and nobody needs it)."""
    services.subscriptions.save(subscription)
    if services.mailboxes.point_at(subscription.mailbox, subscription.subscription_id, replacing):
        return subscription
    services.subscriptions.delete(subscription.subscription_id)
    try:
        _delete_at_graph(graph, subscription.subscription_id)
    except (TokenUnavailable, GraphError) as exc:
        log.warning("subscription %s: left to expire at Graph (%s)", subscription.subscription_id, exc)
    winner = services.subscriptions.of_mailbox(subscription.mailbox)
    if winner is None:
        raise MailboxLeft(subscription.mailbox)
    return winner


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


@dataclass(frozen=True)
class Subscribed:
    subscription: Subscription
    recreated: bool  # Graph had dropped the mailbox's subscription: its other users missed mail meanwhile


def subscribe(graph: GraphClient, tenant_id: str, user_object_id: str, services: Services) -> Subscribed:
    """The mailbox's subscription, alive at Graph, for a connection signing in to it: the one it has, renewed (a
    PATCH proves it alive, reauthorizes it and gives it a fresh lifetime; no second subscription, which Graph
    would refuse), else a new one.

    When Graph dropped the mailbox's subscription and the new one is refused, the old row stays, due now: the
    next hourly renewal run meets Graph's 404 and re-creates it with another user's token (``upkeep``), so the
    mailbox's other users do not stay without one. Raises ``GraphError``."""
    current = services.subscriptions.of_mailbox(mailbox_key(tenant_id, user_object_id))
    if current is not None:
        try:
            return Subscribed(renew_subscription(graph, current, services), recreated=False)
        except GraphError as exc:
            if exc.status != 404:
                raise
    replacing = current.subscription_id if current is not None else ""
    try:
        created = create_subscription(graph, tenant_id, user_object_id, services, replacing)
    except GraphError:
        if current is not None:
            services.subscriptions.save(replace(current, expires_at=services.clock.now()))
        raise
    if current is not None and created.subscription_id != current.subscription_id:
        services.subscriptions.delete(current.subscription_id)
    return Subscribed(created, recreated=current is not None)


def _delete_at_graph(graph: GraphClient, subscription_id: str) -> None:
    try:
        graph.request("DELETE", f"/subscriptions/{subscription_id}")
    except GraphError as exc:
        if exc.status != 404:  # 404: gone already
            raise


def leave_mailbox(mailbox: str, connection_id: str, graph: GraphClient, services: Services) -> None:
    """R8: the connection no longer syncs its mailbox (a disconnect, or a sign-in that did not finish).

    The mailbox's subscription stays while another connection syncs it or is being connected to it (R1). After
    the last one, the mailbox row is deleted on the condition that nobody joined since it was read (a join
    changes it), then the subscription, at Graph with ``graph`` (the leaving connection's token) or, when Graph
    cannot be reached with it, only here (its notifications are then refused as unknown and Graph expires it; a
    later sign-in's create meets its 409 and replaces it). A sign-in that joins after that condition held finds
    no subscription and makes its own. Member rows of sign-ins that died half-way are removed on the way."""
    services.mailboxes.leave(mailbox, connection_id)
    for _ in range(_DECISION_TRIES):
        record, members = services.mailboxes.read(mailbox)
        now = services.clock.now()
        if any(_still_member(m, mailbox, now, services) for m in members):
            return
        for stale in members:
            services.mailboxes.leave(mailbox, stale.connection_id, stale.etag)
        if record is None:
            return  # no subscription recorded: nothing to delete
        if not services.mailboxes.forget(record):
            continue  # someone joined (or a notification arrived) since: look again
        if record.subscription_id:
            services.subscriptions.delete(record.subscription_id)
            try:
                _delete_at_graph(graph, record.subscription_id)
            except (TokenUnavailable, GraphError) as exc:
                log.warning("mailbox %s: its subscription was forgotten here only (%s)", mailbox, exc)
        return
    log.warning("mailbox %s: its row kept changing; its subscription is left to expire at Graph", mailbox)


_DECISION_TRIES = 5


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
