"""Graph v1.0 subscriptions for Outlook messages: create (with the validation handshake), read, renew,
reauthorize, delete, expiry on the emulator's clock; change notifications for the world's message changes;
lifecycle events on demand.

CONTRACT.md sections 1-3 are the rules. Documented deviation: ``notificationUrl`` may be ``http://`` when its
host is loopback (127.0.0.1, localhost, ::1), because the local Functions host serves plain HTTP as
``func start`` does; Graph itself requires HTTPS and could not reach loopback at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
from typing import Any, cast
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from devtools.emulator.mail_store import MailStore
from devtools.emulator.notifier import HANDSHAKE_TIMEOUT_SECONDS, DeliveryFaults, Notifier, validate_endpoint
from devtools.emulator.state import Change
from devtools.emulator.subscriptions_model import (
    LIFECYCLE_EVENTS,
    MAX_CLIENT_STATE,
    TLS_VERSIONS,
    InvalidField,
    LifecycleEvent,
    Subscription,
    change_item,
    clamp_expiry,
    format_datetime,
    lifecycle_item,
    parse_change_type,
    parse_datetime,
    parse_resource,
    subscription_json,
)
from devtools.emulator.web import ROUTE_KEY, Host, Principal, graph_error, json_response

MAX_PER_MAILBOX = 1000  # CONTRACT.md 1.4, across all applications
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
READ_SCOPES = frozenset({"Mail.Read", "Mail.ReadBasic"})  # CONTRACT.md 1.2: read scope, not ReadWrite alone
# Every property of the v1.0 subscription resource; anything else in a body is a client bug.
KNOWN_PROPERTIES = frozenset(
    {
        "changeType",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "resource",
        "expirationDateTime",
        "clientState",
        "latestSupportedTlsVersion",
        "includeResourceData",
        "encryptionCertificate",
        "encryptionCertificateId",
        "notificationQueryOptions",
        "notificationUrlAppId",
        "applicationId",
        "creatorId",
        "id",
    }
)


class SubscriptionsApi:
    """``/v1.0/subscriptions`` plus the notifier that delivers what the subscriptions ask for."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self.world = server.world
        self.handshake_timeout = HANDSHAKE_TIMEOUT_SECONDS
        self.notifier = Notifier()
        self.clock_offset = dt.timedelta()
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}
        self.world.subscribe(self._on_change)

    # -- Python API -----------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The emulator's subscription clock: real UTC time plus whatever tests advanced it by."""
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def advance_clock(self, seconds: float) -> dt.datetime:
        """Move the subscription clock forward (expiry and renewal windows without waiting)."""
        self.clock_offset += dt.timedelta(seconds=seconds)
        return self.now()

    def get(self, subscription_id: str) -> Subscription | None:
        """A live subscription by id (None once deleted, removed or expired)."""
        with self._lock:
            return self._live(subscription_id)

    def of_mailbox(self, mailbox_id: str) -> list[Subscription]:
        """The live subscriptions of a mailbox (every application's), for tests to look at."""
        with self._lock:
            return [s for s in list(self._subs.values()) if self._live(s.id) and s.mailbox_id == mailbox_id]

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up; False on timeout."""
        return self.notifier.flush(timeout)

    def lifecycle(self, subscription_id: str, event: LifecycleEvent) -> bool:
        """Raise a lifecycle event; True if it was queued for a lifecycleNotificationUrl.

        ``reauthorizationRequired`` pauses change notifications until reauthorize/renew (changes in between are
        lost, CONTRACT.md 3.2); ``subscriptionRemoved`` deletes the subscription.
        """
        if event == "reauthorizationRequired":
            self.pause(subscription_id)
        with self._lock:
            sub = self._live(subscription_id)
            if sub is None:
                raise KeyError(subscription_id)
            if event == "subscriptionRemoved":
                del self._subs[sub.id]
        if sub.lifecycle_url is None:
            return False
        self.notifier.enqueue(sub.lifecycle_url, lifecycle_item(sub, event))
        return True

    def pause(self, subscription_id: str) -> None:
        """Stop change notifications until reauthorize/renew: what ``reauthorizationRequired`` announces. Graph may
        pause before the event arrives ("notifications may flow a while, then pause", CONTRACT.md 3.2), so a test
        can pause first, change the mailbox, then raise the event."""
        with self._lock:
            sub = self._live(subscription_id)
            if sub is None:
                raise KeyError(subscription_id)
            sub.paused = True

    def grant_revoked(self, mailbox_id: str) -> None:
        """The mailbox's consent was revoked: every subscription of it needs reauthorization."""
        with self._lock:
            ids = [s.id for s in self._subs.values() if s.mailbox_id == mailbox_id]
        for subscription_id in ids:
            self.lifecycle(subscription_id, "reauthorizationRequired")

    def close(self) -> None:
        self.notifier.close()

    # -- Graph ----------------------------------------------------------------------------------------
    def graph(self, request: Request, principal: Principal) -> Response | None:
        """Answer ``/v1.0/subscriptions[/{id}[/reauthorize]]``; None for other paths."""
        parts = request.path.split("/")[2:]  # "", "v1.0", then the rest
        if not parts or parts[0] != "subscriptions" or len(parts) > 3:
            return None
        key = (request.method, len(parts), parts[2] if len(parts) == 3 else "")
        handlers = {
            ("POST", 1, ""): ("POST /subscriptions", self._create),
            ("GET", 1, ""): ("GET /subscriptions", self._list),
            ("GET", 2, ""): ("GET /subscriptions/{id}", self._read),
            ("PATCH", 2, ""): ("PATCH /subscriptions/{id}", self._renew),
            ("DELETE", 2, ""): ("DELETE /subscriptions/{id}", self._delete),
            ("POST", 3, "reauthorize"): ("POST /subscriptions/{id}/reauthorize", self._reauthorize),
        }
        if key not in handlers:
            return graph_error(405, "Request_BadRequest", f"{request.method} is not supported on {request.path}")
        route, handler = handlers[key]
        request.environ[ROUTE_KEY] = route
        try:
            return handler(request, principal, parts[1] if len(parts) > 1 else "")
        except InvalidField as err:
            return graph_error(400, "InvalidRequest", str(err))

    def _create(self, request: Request, principal: Principal, _: str) -> Response:
        if not self.server.identity.scopes(request) & READ_SCOPES:
            return graph_error(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; "
                "Reason: Mail.Read or Mail.ReadBasic is required to "
                "subscribe to messages]",
            )
        body = _json_body(request)
        sub = self._new_subscription(body, principal, immutable_ids=_prefers_immutable_ids(request))
        if isinstance(sub, Response):
            return sub
        with self._lock:
            if refusal := self._refusal(sub):
                return refusal
        # CONTRACT.md 2.1: both URLs are validated, outside any lock (each can take up to the timeout).
        for url in dict.fromkeys(u for u in (sub.notification_url, sub.lifecycle_url) if u):
            if failure := validate_endpoint(url, self.handshake_timeout):
                return graph_error(400, "InvalidRequest", failure)
        with self._lock:
            if refusal := self._refusal(sub):  # a twin may have been created during the handshake
                return refusal
            self._subs[sub.id] = sub
        return json_response(subscription_json(sub, self.server.graph_base_url), status=201)

    def _new_subscription(
        self, body: dict[str, Any], principal: Principal, immutable_ids: bool
    ) -> Subscription | Response:
        if unknown := sorted(set(body) - KNOWN_PROPERTIES - {k for k in body if k.startswith("@odata.")}):
            raise InvalidField(unknown[0], "is not a property of microsoft.graph.subscription")
        if body.get("includeResourceData"):
            raise InvalidField("includeResourceData", "rich notifications are not supported by the emulator")
        resource = body.get("resource")
        if not isinstance(resource, str) or not resource:
            raise InvalidField("resource", "required, e.g. /users/{id}/messages")
        path = parse_resource(resource)
        mailbox = self.world.mailbox(path.user or principal.mailbox_id)
        if mailbox is None:
            return graph_error(404, "ResourceNotFound", f"resource: user '{path.user}' not found")
        if mailbox.id != principal.mailbox_id:
            # CONTRACT.md 1.2: delegated permissions subscribe only to the signed-in user's mailbox.
            return graph_error(
                403,
                "ExtensionError",
                "resource: with delegated permissions only the signed-in user's mailbox can be subscribed to",
            )
        folder_id = None
        if path.folder is not None:
            with self.world.lock:
                folder = MailStore.of(self.world).box(mailbox).folder(path.folder)
            if folder is None:
                return graph_error(404, "ResourceNotFound", f"resource: mail folder '{path.folder}' not found")
            folder_id = folder.id
        client_state = body.get("clientState")
        if client_state is not None and not isinstance(client_state, str):
            raise InvalidField("clientState", "must be a string")
        if client_state is not None and len(client_state) > MAX_CLIENT_STATE:
            raise InvalidField("clientState", f"at most {MAX_CLIENT_STATE} characters, got {len(client_state)}")
        tls = body.get("latestSupportedTlsVersion", "v1_2")
        if tls not in TLS_VERSIONS:
            raise InvalidField("latestSupportedTlsVersion", f"must be one of {sorted(TLS_VERSIONS)}, got {tls!r}")
        lifecycle_url = body.get("lifecycleNotificationUrl")
        return Subscription(
            id=str(uuid.uuid4()),
            mailbox_id=mailbox.id,
            tenant_id=mailbox.tenant_id,
            client_id=principal.client_id,
            resource=resource.lstrip("/"),
            folder_id=folder_id,
            change_type=parse_change_type(body.get("changeType")),
            notification_url=_webhook_url(body.get("notificationUrl"), "notificationUrl"),
            lifecycle_url=_webhook_url(lifecycle_url, "lifecycleNotificationUrl") if lifecycle_url else None,
            client_state=client_state,
            expires_at=clamp_expiry(parse_datetime(body.get("expirationDateTime"), "expirationDateTime"), self.now()),
            tls_version=tls,
            immutable_ids=immutable_ids,
        )

    def _list(self, request: Request, principal: Principal, _: str) -> Response:
        # CONTRACT.md 1.3: delegated GET /subscriptions lists only this app's subscriptions for this user.
        with self._lock:
            mine = [
                s
                for s in list(self._subs.values())
                if self._live(s.id) and (s.client_id, s.mailbox_id) == (principal.client_id, principal.mailbox_id)
            ]
        base = self.server.graph_base_url
        value = [{k: v for k, v in subscription_json(s, base).items() if k != "@odata.context"} for s in mine]
        return json_response({"@odata.context": f"{base}/$metadata#subscriptions", "value": value})

    def _read(self, request: Request, principal: Principal, subscription_id: str) -> Response:
        sub = self._owned(subscription_id, principal)
        if sub is None:
            return _not_found(subscription_id)
        return json_response(subscription_json(sub, self.server.graph_base_url))

    def _renew(self, request: Request, principal: Principal, subscription_id: str) -> Response:
        sub = self._owned(subscription_id, principal)
        if sub is None:
            return _not_found(subscription_id)
        body = _json_body(request)
        if "lifecycleNotificationUrl" in body:
            # CONTRACT.md 1.1: it can only be set at creation; delete and recreate the subscription instead.
            raise InvalidField(
                "lifecycleNotificationUrl", "cannot be added or changed by PATCH; recreate the subscription"
            )
        if fixed := sorted(set(body) - {"expirationDateTime", "notificationUrl"}):
            raise InvalidField(fixed[0], "cannot be changed by PATCH (only expirationDateTime and notificationUrl)")
        if "expirationDateTime" not in body and "notificationUrl" not in body:
            raise InvalidField("expirationDateTime", "required to renew a subscription")
        expires_at = sub.expires_at
        if "expirationDateTime" in body:
            expires_at = clamp_expiry(parse_datetime(body["expirationDateTime"], "expirationDateTime"), self.now())
        notification_url = sub.notification_url
        if "notificationUrl" in body:
            notification_url = _webhook_url(body["notificationUrl"], "notificationUrl")
            if notification_url != sub.notification_url and (
                failure := validate_endpoint(notification_url, self.handshake_timeout)
            ):
                return graph_error(400, "InvalidRequest", failure)
        with self._lock:
            sub.expires_at, sub.notification_url = expires_at, notification_url
            sub.paused = False  # CONTRACT.md 1.3: renewing also reauthorizes
        return json_response(subscription_json(sub, self.server.graph_base_url))

    def _reauthorize(self, request: Request, principal: Principal, subscription_id: str) -> Response:
        sub = self._owned(subscription_id, principal)
        if sub is None:
            return _not_found(subscription_id)
        with self._lock:
            sub.paused = False  # CONTRACT.md 1.3: 204, the expiry does not change
        return Response(status=204)

    def _delete(self, request: Request, principal: Principal, subscription_id: str) -> Response:
        sub = self._owned(subscription_id, principal)
        if sub is None:
            return _not_found(subscription_id)
        with self._lock:
            self._subs.pop(sub.id, None)
        return Response(status=204)

    # -- control --------------------------------------------------------------------------------------
    def control(self, request: Request) -> Response | None:
        """``/_emulator/subscriptions/{clock,flush,faults}`` and ``/_emulator/subscriptions/{id}/lifecycle``."""
        parts = request.path.split("/")[2:]  # "", "_emulator", then the rest
        if request.method != "POST" or not parts or parts[0] != "subscriptions":
            return None
        simple = {"clock": self._control_clock, "flush": self._control_flush, "faults": self._control_faults}
        if len(parts) == 3 and parts[2] == "lifecycle":
            route, subscription_id = "{id}/lifecycle", parts[1]
        elif len(parts) == 2 and parts[1] in simple:
            route, subscription_id = parts[1], ""
        else:
            return None
        request.environ[ROUTE_KEY] = f"POST /_emulator/subscriptions/{route}"
        try:
            body = _json_body(request)
            if subscription_id:
                return self._control_lifecycle(subscription_id, body)
            return simple[route](body)
        except ValueError as err:  # InvalidField included
            return graph_error(400, "badRequest", str(err))

    def _control_lifecycle(self, subscription_id: str, body: dict[str, Any]) -> Response:
        event = body.get("event")
        if event not in LIFECYCLE_EVENTS:
            raise InvalidField("event", f"must be one of {list(LIFECYCLE_EVENTS)}, got {event!r}")
        try:
            queued = self.lifecycle(subscription_id, cast(LifecycleEvent, event))
        except KeyError:
            return _not_found(subscription_id)
        return json_response({"queued": queued}, status=202)

    def _control_clock(self, body: dict[str, Any]) -> Response:
        seconds = body.get("advance_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidField("advance_seconds", "required, a number of seconds >= 0")
        return json_response({"now": format_datetime(self.advance_clock(seconds))})

    def _control_flush(self, body: dict[str, Any]) -> Response:
        timeout = body.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidField("timeout", "must be a number of seconds >= 0")
        return json_response({"idle": self.flush(timeout)})

    def _control_faults(self, body: dict[str, Any]) -> Response:
        if unknown := sorted(set(body) - {"drop_rate", "duplicate_rate", "reorder_rate", "seed"}):
            raise InvalidField(unknown[0], "unknown; use drop_rate, duplicate_rate, reorder_rate, seed")
        faults = DeliveryFaults(**body)
        self.notifier.set_faults(faults)
        return json_response(dataclasses.asdict(faults))

    # -- notifications --------------------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        """World listener: queue a notification for each live, unpaused subscription watching the change."""
        if change.resource_kind != "message":
            return
        with self._lock:
            watching = [s for s in list(self._subs.values()) if self._live(s.id) and not s.paused and s.watches(change)]
        for sub in watching:
            self.notifier.enqueue(sub.notification_url, change_item(sub, self._as_notified(sub, change)))

    def _as_notified(self, sub: Subscription, change: Change) -> Change:
        """The change with the id Graph would show: immutable only if the subscription asked for immutable ids."""
        if sub.immutable_ids:
            return change
        with self.world.lock:
            box = MailStore.of(self.world).box_of(change.mailbox_id)
            message = box.messages.get(change.item_id) if box else None
            tombstone = box.tombstones.get(change.folder_id, {}).get(change.item_id) if box else None
        # A deleted message (or one that left the folder) is known by the REST id it had in that folder.
        rest_id = (
            tombstone.rest_id
            if change.change_type == "deleted" and tombstone
            else (message.rest_id if message else change.item_id)
        )
        return Change(
            change.change_type, change.mailbox_id, change.folder_id, change.resource_kind, rest_id, change.etag
        )

    # -- helpers (call with self._lock held where noted) ----------------------------------------------
    def _live(self, subscription_id: str) -> Subscription | None:
        """Lock held. The subscription unless gone or expired; expired ones are dropped (Graph deletes them)."""
        sub = self._subs.get(subscription_id)
        if sub is not None and sub.expires_at <= self.now():
            del self._subs[subscription_id]
            return None
        return sub

    def _owned(self, subscription_id: str, principal: Principal) -> Subscription | None:
        with self._lock:
            sub = self._live(subscription_id)
        if sub is None or (sub.client_id, sub.mailbox_id) != (principal.client_id, principal.mailbox_id):
            return None
        return sub

    def _refusal(self, new: Subscription) -> Response | None:
        """Lock held. 409 for a duplicate (CONTRACT.md 1.1: same app, mailbox, changeType and resolved resource);
        403 past the mailbox's quota (CONTRACT.md 1.4)."""
        live = [s for s in list(self._subs.values()) if self._live(s.id)]
        for sub in live:
            same = (sub.client_id, sub.mailbox_id, sub.folder_id, sub.change_types)
            if same == (new.client_id, new.mailbox_id, new.folder_id, new.change_types):
                message = f"Subscription Id {sub.id} already exists for the requested combination"
                return graph_error(409, "ExtensionError", message)
        if sum(s.mailbox_id == new.mailbox_id for s in live) >= MAX_PER_MAILBOX:
            return graph_error(
                403, "ExtensionError", f"The mailbox has reached its limit of {MAX_PER_MAILBOX} subscriptions."
            )
        return None


def _webhook_url(value: Any, field: str) -> str:
    """HTTPS, or HTTP to a loopback host (the documented local deviation); anything else is a 400."""
    if not isinstance(value, str) or not value:
        raise InvalidField(field, "required, an https URL")
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return value
    raise InvalidField(field, f"must be an https URL (http only to a loopback host), got {value!r}")


def _prefers_immutable_ids(request: Request) -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(p.strip().replace(" ", "").lower() == 'idtype="immutableid"' for p in prefer.split(","))


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(as_text=True) or "{}")
    except ValueError as err:
        raise InvalidField("body", f"not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise InvalidField("body", "must be a JSON object")
    return body


def _not_found(subscription_id: str) -> Response:
    return graph_error(404, "ResourceNotFound", f"The object was not found (subscription '{subscription_id}').")
