"""Connect, callback, disconnect and the connections read: the use cases behind the Outlook settings page.

Flow: Enrollio signs a link -> ``start_connect`` checks it (signature, at most 15 minutes of life, every field,
then spends it: a link works once) and sends the browser to Microsoft with a fresh MSAL auth-code flow kept
server-side (single use, minutes) -> ``complete_connect`` checks the browser's cookie, spends the flow, redeems the
code, reads ``/me``, stores the encrypted token cache, joins the mailbox (whose one Graph subscription it renews, or
creates when the mailbox has none: another user may have connected the same mailbox, R1) and only then writes the
connection, so a failure half-way leaves no connection behind -> redirect to Enrollio's return URL with the outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import msal
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from sync_core import events
from sync_core.adapters.graph import GraphClient, GraphError, GraphUnavailable, StaticToken
from sync_core.adapters.identity import IdentityUnreachable, SignInFailed
from sync_core.adapters.ops_store import CursorStore
from sync_core.adapters.secrets_store import PendingConnect
from sync_core.catchup import start_cursors
from sync_core.catchup_queue import request_catchup
from sync_core.connections import (
    Connection,
    GraphIdentity,
    Status,
    connection_id_for,
    mailbox_key,
    on_connected,
    on_disconnected,
)
from sync_core.ids import TableKey, table_key
from sync_core.mailbox import leave_mailbox, mark_grant_lost, sent_items_folder, subscribe, syncing_members
from sync_core.replay import spend_link
from sync_core.results import BadRequest, Forbidden, Json, Page, Problem, Redirect, parse_fields
from sync_core.services import Services
from sync_core.signing import verify_link

log = logging.getLogger(__name__)

FLOW_LIFETIME = dt.timedelta(minutes=10)
CALLBACK_ROUTE = "outlook/callback"
BROWSER_COOKIE = "enrollio_outlook_connect"
MAX_RETURN_URL = 2048  # the practical limit of a URL across browsers and proxies


def _well_formed_url(value: str) -> str:
    """An absolute http(s) URL with nothing a browser or a Location header would read differently."""
    if re.search(r"[\s\x00-\x1f\x7f-\x9f\\]", value):
        raise ValueError("must not contain whitespace, control characters or backslashes")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry user information")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise ValueError("must not contain dot segments")
    return value


ReturnUrl = Annotated[
    str,
    # Printable ASCII without a backslash: it goes back out in a Location header (browsers percent-encode the rest).
    StringConstraints(max_length=MAX_RETURN_URL, pattern=r"^https?://[!-\[\]-~]+$"),
    AfterValidator(_well_formed_url),
]
LoginHint = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]


class ConnectLink(BaseModel):
    """The fields of Enrollio's signed connect link (``exp`` and ``sig`` are checked with the signature).

    A link works once: its random ``nonce`` keeps two links made alike in the same second two links."""

    model_config = ConfigDict(extra="ignore")
    user_id: TableKey
    account_id: TableKey
    return_url: ReturnUrl
    nonce: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
    login_hint: LoginHint = ""


class SignInUnavailable(Problem):
    """Microsoft's sign-in is out of reach for now (a 503 page; the link is not used up)."""

    status = 503


def callback_url(services: Services) -> str:
    return f"{services.settings.public_base_url.rstrip('/')}/api/{CALLBACK_ROUTE}"


def return_url_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """Same scheme and host as an allow-listed prefix, and a path under it (no look-alike hosts)."""
    target = urlsplit(url)
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        if (target.scheme, target.netloc.lower()) == (allowed.scheme, allowed.netloc.lower()) and (
            target.path.startswith(allowed.path or "/")
        ):
            return True
    return False


def start_connect(params: Mapping[str, str], services: Services) -> Redirect:
    """Check Enrollio's signed link, spend it, and send the browser to Microsoft's sign-in.

    The flow is started before the link is spent: when the identity platform cannot be reached (MSAL fetches its
    OpenID configuration first) the browser gets a 503 "try again" page and the same link still works."""
    verified = verify_link(services.shared_secret, params, services.clock.now())
    link = parse_fields(ConnectLink, params, "connect link")
    if not return_url_allowed(link.return_url, services.settings.return_url_prefixes):
        raise BadRequest("return_url is not on the allow-list", fields=[{"field": "return_url"}])
    try:
        flow = services.identity.start_flow(callback_url(services), login_hint=link.login_hint or None)
    except IdentityUnreachable:  # before the link is spent: the same link works once Microsoft answers again
        raise SignInUnavailable("Microsoft sign-in cannot be reached right now; try again in a minute") from None
    spend_link(verified, services)  # once: a replayed link, even from another Microsoft account, is refused
    nonce = secrets.token_urlsafe(32)
    pending = PendingConnect(
        browser_binding=_binding(nonce),
        state=str(flow["state"]),
        user_id=link.user_id,
        account_id=link.account_id,
        return_url=link.return_url,
        flow=flow,
        expires_at=services.clock.now() + FLOW_LIFETIME,
    )
    services.flows.put(pending)
    secure = "; Secure" if services.settings.public_base_url.startswith("https://") else ""
    # form_post brings the browser back with a cross-site POST: the cookie must be SameSite=None (and Secure).
    cookie = f"{BROWSER_COOKIE}={nonce}; Path=/api/{CALLBACK_ROUTE}; Max-Age=600; HttpOnly; SameSite=None{secure}"
    return Redirect(str(flow["auth_uri"]), set_cookie=cookie)


def _binding(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _back(return_url: str, **outcome: str) -> Redirect:
    """Enrollio's return URL with the outcome added to its query (before any fragment)."""
    parts = urlsplit(return_url)
    query = "&".join(q for q in (parts.query, urlencode(outcome)) if q)
    return Redirect(urlunsplit(parts._replace(query=query)))


_EXPIRED = Page(
    400,
    "Sign-in link expired",
    "This sign-in has expired or was already used (field: state). Start again from Enrollio.",
)


def complete_connect(query: Mapping[str, str], services: Services, browser_nonce: str | None = None) -> Redirect | Page:
    """Microsoft's redirect back: finish sign-in, store the connection, subscribe, return to Enrollio.

    Only the browser that opened Enrollio's link may finish it (its cookie): otherwise someone holding a signed
    link for their own Enrollio user could have a victim sign in and attach the victim's mailbox to that user.
    The cookie is checked before the flow is spent, so a stranger who learns a ``state`` cannot cancel it.
    """
    now = services.clock.now()
    try:
        state = table_key("state", query.get("state") or None)
    except Problem:
        return _EXPIRED
    pending = services.flows.find(state, now)
    if pending is None:
        return _EXPIRED
    if not browser_nonce or not hmac.compare_digest(_binding(browser_nonce), pending.browser_binding):
        return Page(
            400,
            "Sign-in not started here",
            f"Finish connecting Outlook in the browser where you started it (field: cookie {BROWSER_COOKIE}).",
        )
    if not services.flows.spend(pending):
        return _EXPIRED
    if error := query.get("error"):
        return _back(pending.return_url, outcome="error", reason=error)
    try:
        result, cache = services.identity.finish_flow(pending.flow, query)
    except SignInFailed as failed:
        return _back(pending.return_url, outcome="error", reason=failed.reason)

    access_token = str(result["access_token"])
    claims = result.get("id_token_claims", {})
    accounts = list(cache.search(msal.TokenCache.CredentialType.ACCOUNT))
    try:
        me = services.graph(StaticToken(access_token), mailbox=str(claims.get("oid", "me"))).get_json("/me")
    except GraphError as exc:  # nothing is written yet: the user can simply try again
        return _back(pending.return_url, outcome="error", reason="profile_unavailable", detail=exc.code)
    who = GraphIdentity(
        tenant_id=str(claims.get("tid", "")),
        user_object_id=str(me["id"]),
        address=str(me.get("mail") or me["userPrincipalName"]),
        home_account_id=str(accounts[0]["home_account_id"]) if accounts else "",
    )
    existing = services.connections.for_user(pending.user_id)
    cid = connection_id_for(pending.user_id, who.tenant_id, who.user_object_id)
    previous = next((c for c in existing if c.connection_id == cid), None)
    services.token_caches.save(cid, cache.serialize())
    graph = services.graph(StaticToken(access_token), mailbox=who.user_object_id)
    mailbox = mailbox_key(who.tenant_id, who.user_object_id)
    newcomer = previous is None or previous.status is Status.DISCONNECTED
    # A member before its subscription is looked at: a disconnect of another user of the mailbox meanwhile then
    # keeps the subscription for this one (R1), whatever this connection's row says until the end.
    services.mailboxes.join(mailbox, pending.user_id, cid, now)
    finished = False
    try:
        try:
            subscribed = subscribe(graph, who.tenant_id, who.user_object_id, services)
        except GraphError as exc:
            # Refused for good, the mailbox's subscription may be gone: say so (R2). A passing failure (a 503, a
            # throttled mailbox) leaves the shared subscription as it was: the user only tries again.
            if previous is not None and not newcomer and not isinstance(exc, GraphUnavailable):
                mark_grant_lost(previous, f"subscription_failed: {exc.code}", services)
            return _back(pending.return_url, outcome="error", reason="subscription_failed", detail=exc.code)
        try:
            sent_items = sent_items_folder(graph, who.user_object_id)
        except GraphError:
            sent_items = ""  # learnt on first use instead (known_sent_items_folder)
        changed = on_connected(existing, pending.user_id, pending.account_id, who, now, sent_items)
        if newcomer:
            # Delta starts at this sign-in: a first round never pages the whole mailbox, and after an explicit
            # disconnect, mail of the disconnected time does not sync (R8). Before the row says "connected".
            start_cursors(cid, changed[0].sync_from or now, services)
        with events.recorded(services, events.connection_changed(previous, changed[0])):
            services.connections.save(changed)
        finished = True
    finally:
        if not finished and newcomer:  # nothing of a sign-in that did not finish keeps the mailbox's subscription
            _undo_join(mailbox, cid, graph, services)
    if not newcomer:
        # Its grant was lost (Graph paused its notifications): fetch that gap from where delta left off (R8).
        request_catchup(changed[0], "reconnected", services)
    if subscribed.recreated:
        # Graph had dropped the mailbox's subscription: its other users missed what arrived meanwhile.
        for other in syncing_members(mailbox, services):
            if other.connection_id != cid and other.status is Status.CONNECTED:
                request_catchup(other, "subscription_recreated", services)
    return _back(pending.return_url, outcome="connected", address=who.address, connection_id=cid)


def _undo_join(mailbox: str, connection_id: str, graph: GraphClient, services: Services) -> None:
    """A first sign-in (or one after a disconnect) that failed or crashed: it leaves the mailbox as a disconnect
    would (R8: the subscription goes if nobody else syncs the mailbox) and its grant is not kept. A failure here is
    logged, not raised over the sign-in's own."""
    try:
        leave_mailbox(mailbox, connection_id, graph, services)
        services.token_caches.delete(connection_id)
    except Exception:
        log.exception("connection %s: its unfinished sign-in could not be undone", connection_id)


class DisconnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: TableKey
    connection_id: TableKey


def disconnect(request: DisconnectRequest, services: Services) -> Json:
    """R8: stop syncing and sending through this connection; its tokens are deleted, and its mailbox's subscription
    too when no other connection syncs that mailbox."""
    connection = services.connections.get(request.user_id, request.connection_id)
    if connection is None:
        # Someone else's connection, or nobody's: the same 403 (telling them apart would reveal which connection
        # ids exist, and take a scan across every user's connections).
        raise Forbidden(
            f"connection '{request.connection_id}' is not one of user '{request.user_id}''s connections",
            fields=[{"field": "connection_id"}],
        )
    # The status first: from this moment nothing sends or syncs through it (R8), whatever happens next.
    gone = on_disconnected(connection, services.clock.now())
    with events.recorded(services, events.connection_changed(connection, gone)):
        services.connections.save([gone])
    # Its mailbox's subscription goes only once no other user's connection syncs it (R1).
    leave_mailbox(connection.mailbox, connection.connection_id, services.graph_for(connection), services)
    services.token_caches.delete(connection.connection_id)
    CursorStore(services.storage.tables).forget(connection.connection_id)  # a reconnect starts afresh (R8)
    return Json(200, connection_view(gone, services))


def connection_view(connection: Connection, services: Services) -> dict[str, Any]:
    """What Enrollio shows of a connection. Its subscription and last notification are its mailbox's (shared by
    every user who connected that mailbox); a disconnected connection has neither."""
    record = services.mailboxes.get(connection.mailbox) if connection.syncs else None
    subscription = services.subscriptions.get(record.subscription_id) if record and record.subscription_id else None
    last_notification = record.last_notification_at if record else None
    return {
        "connection_id": connection.connection_id,
        "address": connection.address,
        "status": "active" if connection.active and connection.can_send else connection.status.value,
        "active": connection.active,
        "status_reason": connection.status_reason or None,
        "connected_at": connection.connected_at.isoformat(),
        "subscription_expires_at": subscription.expires_at.isoformat() if subscription else None,
        "last_notification_at": last_notification.isoformat() if last_notification else None,
    }


def list_connections(user_id: str, services: Services) -> Json:
    user_id = table_key("user_id", user_id)
    return Json(
        200,
        {
            "user_id": user_id,
            "connections": [connection_view(c, services) for c in services.connections.for_user(user_id)],
        },
    )
