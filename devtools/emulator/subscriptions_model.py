"""Subscriptions as data: the record, its resource path, and the JSON shapes Graph sends about it.

Shapes follow the samples in tests/graph_samples: ``subscription-create-response.json`` /
``subscription-renew-response.json`` (the subscription), ``change-notification-message-created.json`` (CONTRACT.md
3.1) and ``lifecycle-*.json`` (CONTRACT.md 3.2). Pure functions; no I/O.

Assumption (CONTRACT.md 1.1 lists resources with and without a leading slash, and is silent on how Graph echoes
them): ``resource`` is echoed without its leading slash, as in every documented answer (``users/{id}/messages``
in the 201 of C ``concepts/outlook-change-notifications-overview.md`` @0a75a47c, Example 1; ``users/...`` in each
change notification's ``resource``). A client comparing the string it sent with the one Graph keeps must
normalise both.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from devtools.emulator.state import Change

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
TLS_VERSIONS = frozenset({"v1_0", "v1_1", "v1_2", "v1_3"})
MAX_LIFETIME = dt.timedelta(minutes=10_080)  # CONTRACT.md 1.1: Outlook messages, basic notifications
MIN_LIFETIME = dt.timedelta(minutes=45)  # CONTRACT.md 1.1: shorter requests are raised to 45 minutes
MAX_CLIENT_STATE = 128  # CONTRACT.md 1.1: the subscription resource's limit (the stricter of 128 and 255)

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]

_RESOURCE = re.compile(
    r"""^/?(?:me|users/(?P<user>[^/()?]+))
        (?:/mailfolders(?:\('(?P<quoted>[^']+)'\)|/(?P<plain>[^/()?]+)))?
        /messages$""",
    re.IGNORECASE | re.VERBOSE,
)


class InvalidField(ValueError):
    """A request field Graph would reject; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ResourcePath:
    """A parsed message resource: whose mailbox (None = ``me``) and which folder (None = the whole mailbox)."""

    user: str | None
    folder: str | None


@dataclass
class Subscription:
    id: str
    mailbox_id: str
    tenant_id: str
    client_id: str
    resource: str  # as the client wrote it, without a leading slash (the module docstring's assumption)
    folder_id: str | None  # resolved at creation; None = every folder of the mailbox
    change_type: str  # as the client wrote it, e.g. "created,updated"
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: dt.datetime
    tls_version: str
    immutable_ids: bool  # created with Prefer: IdType="ImmutableId" (CONTRACT.md 1.1)
    paused: bool = False  # after reauthorizationRequired, until reauthorized or renewed (CONTRACT.md 3.2)

    @property
    def change_types(self) -> frozenset[str]:
        return frozenset(self.change_type.split(","))

    def watches(self, change: Change) -> bool:
        """Would Graph notify this subscription of ``change``?"""
        return (
            change.mailbox_id == self.mailbox_id
            and change.change_type in self.change_types
            and (self.folder_id is None or change.folder_id == self.folder_id)
        )


def parse_resource(resource: str) -> ResourcePath:
    """Parse ``/me/messages``, ``users/{id}/messages``, ``me/mailFolders('inbox')/messages`` or
    ``users/{id}/mailFolders/{id}/messages`` (leading slash optional, names case-insensitive)."""
    if "?" in resource:
        raise InvalidField("resource", "query options ($filter, $select) are not supported by the emulator")
    match = _RESOURCE.match(resource)
    if match is None:
        raise InvalidField(
            "resource",
            f"{resource!r} is not a message resource the emulator supports: /me/messages, /users/{{id}}/messages, "
            "/me/mailFolders('{name or id}')/messages, /users/{id}/mailFolders/{id}/messages",
        )
    return ResourcePath(user=match["user"], folder=match["quoted"] or match["plain"])


def parse_change_type(value: Any) -> str:
    """A comma-separated combination of created/updated/deleted (CONTRACT.md 1.1)."""
    if not isinstance(value, str) or not value:
        raise InvalidField("changeType", "required, e.g. 'created' or 'created,updated'")
    unknown = [part for part in value.split(",") if part not in CHANGE_TYPES]
    if unknown:
        raise InvalidField("changeType", f"{unknown[0]!r} is not one of created, updated, deleted")
    return value


def parse_datetime(value: Any, field: str) -> dt.datetime:
    """Graph's ISO 8601 date-times: ``Z`` or an offset, 0 to 7 fractional digits."""
    if not isinstance(value, str):
        raise InvalidField(field, "required, an ISO 8601 date-time such as 2016-11-20T18:23:45.9356913Z")
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        raise InvalidField(field, f"{value!r} is not an ISO 8601 date-time with a time zone")
    head, fraction, zone = match.groups()
    try:
        moment = dt.datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone))
    except ValueError as err:
        raise InvalidField(field, f"{value!r}: {err}") from None
    return moment.astimezone(dt.UTC) + dt.timedelta(microseconds=int(((fraction or "") + "000000")[:6]))


def format_datetime(moment: dt.datetime) -> str:
    """Seven fractional digits and ``Z``, as Graph writes them."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def clamp_expiry(requested: dt.datetime, now: dt.datetime) -> dt.datetime:
    """Raise a too-short expiry to 45 minutes; a too-long one is an error (CONTRACT.md 1.1)."""
    if requested > now + MAX_LIFETIME:
        raise InvalidField(
            "expirationDateTime",
            f"Subscription expiration can only be {int(MAX_LIFETIME.total_seconds() // 60)} minutes in the future.",
        )
    return max(requested, now + MIN_LIFETIME)


def subscription_json(sub: Subscription, graph_base_url: str) -> dict[str, Any]:
    """The subscription entity, as POST (201), GET and PATCH (200) answer it."""
    return {
        "@odata.context": f"{graph_base_url}/$metadata#subscriptions/$entity",
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": sub.client_id,
        "changeType": sub.change_type,
        "clientState": sub.client_state,
        "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": format_datetime(sub.expires_at),
        "creatorId": sub.mailbox_id,
        "includeResourceData": False,
        "latestSupportedTlsVersion": sub.tls_version,
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
        "notificationContentType": "application/json",
    }


def change_item(sub: Subscription, change: Change) -> dict[str, Any]:
    """One changeNotification for a message, shaped like the documented sample (CONTRACT.md 3.1).

    The sample's ``resource`` (``users/...@tenant/messages/...``) and ``@odata.id`` (``Users/.../Messages/...``)
    differ in case on purpose: clients must read ``resourceData.id``, not parse paths.
    """
    user = f"{sub.mailbox_id}@{sub.tenant_id}"
    resource_data: dict[str, Any] = {
        "@odata.type": "#Microsoft.Graph.Message",
        "@odata.id": f"Users/{user}/Messages/{change.item_id}",
    }
    if change.etag:
        resource_data["@odata.etag"] = change.etag
    resource_data["id"] = change.item_id
    return {
        "id": secrets.token_urlsafe(10),
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_datetime(sub.expires_at),
        "clientState": sub.client_state,
        "changeType": change.change_type,
        "resource": f"users/{user}/messages/{change.item_id}",
        "tenantId": sub.tenant_id,
        "resourceData": resource_data,
    }


def lifecycle_item(sub: Subscription, event: LifecycleEvent) -> dict[str, Any]:
    """One lifecycle notification (CONTRACT.md 3.2): no resource, just the subscription and the event."""
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_datetime(sub.expires_at),
        "tenantId": sub.tenant_id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }
