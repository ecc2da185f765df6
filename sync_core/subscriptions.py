"""Graph subscriptions for a connection's mailbox: what to ask for, when to renew, how to trust a notification.

CONTRACT.md section 1: Outlook message subscriptions live at most 10,080 minutes; ``clientState`` is at most 128
characters and must be checked on every notification; ``notificationUrl`` and ``lifecycleNotificationUrl`` are
both set at creation (the lifecycle URL cannot be added later). We subscribe to the whole mailbox
(``/users/{id}/messages``: Inbox and Sent Items alike) for ``created``, by the user's GUID (UPNs with an
apostrophe break, section 1.1).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass

MAX_LIFETIME = dt.timedelta(minutes=10_080)
# Ask a little under the maximum: a request past it fails, and clocks drift.
REQUESTED_LIFETIME = MAX_LIFETIME - dt.timedelta(minutes=30)
# Renew when less than this is left: a day of slack covers a missed timer run or a Graph outage.
RENEWAL_WINDOW = dt.timedelta(hours=24)
NOTIFICATIONS_ROUTE = "graph/notifications"
LIFECYCLE_ROUTE = "graph/lifecycle"


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    user_id: str
    connection_id: str
    tenant_id: str
    client_state: str
    resource: str
    expires_at: dt.datetime


def new_client_state() -> str:
    """A random secret per subscription (43 characters, well under Graph's 128)."""
    return secrets.token_urlsafe(32)


# What new_client_state makes: 32 random bytes as unpadded base64url.
_CLIENT_STATE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def could_be_ours(client_state: str | None) -> bool:
    """Whether a notification's clientState has the shape of the ones we issue: one that has not is a forgery,
    refused without the storage read that looking its subscription up would cost."""
    return client_state is not None and _CLIENT_STATE_SHAPE.fullmatch(client_state) is not None


def resource_for(user_object_id: str) -> str:
    return f"/users/{user_object_id}/messages"


def same_resource(ours: str, theirs: str) -> bool:
    """Whether two spellings name the same subscribed resource: Graph echoes ``/users/{id}/messages`` as
    ``users/{id}/messages`` (CONTRACT.md section 1.1, the documented 201), and paths are case-insensitive."""
    return ours.strip().lstrip("/").lower() == theirs.strip().lstrip("/").lower()


def create_request(user_object_id: str, public_base_url: str, client_state: str, now: dt.datetime) -> dict[str, str]:
    """The body of ``POST /subscriptions`` for a connection's mailbox."""
    base = public_base_url.rstrip("/")
    return {
        "changeType": "created",
        "notificationUrl": f"{base}/api/{NOTIFICATIONS_ROUTE}",
        "lifecycleNotificationUrl": f"{base}/api/{LIFECYCLE_ROUTE}",
        "resource": resource_for(user_object_id),
        "expirationDateTime": iso(now + REQUESTED_LIFETIME),
        "clientState": client_state,
        "latestSupportedTlsVersion": "v1_2",
    }


def renew_request(now: dt.datetime) -> dict[str, str]:
    return {"expirationDateTime": iso(now + REQUESTED_LIFETIME)}


def due_for_renewal(
    subscriptions: list[Subscription], now: dt.datetime, window: dt.timedelta = RENEWAL_WINDOW
) -> list[Subscription]:
    """Subscriptions that expire within ``window`` (expired ones included: renewing those fails and recreates)."""
    return [s for s in subscriptions if s.expires_at - now <= window]


def client_state_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison: a notification's clientState against the subscription's secret."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def parse_iso(value: str) -> dt.datetime:
    """A Graph timestamp in UTC: 0 to 7 fractional digits, ``Z`` or an offset such as ``+05:30`` (Graph's own
    samples carry offsets, CONTRACT.md section 1.1); one without an offset is UTC, as Graph's timestamps are."""
    moment = dt.datetime.fromisoformat(value.strip())
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
