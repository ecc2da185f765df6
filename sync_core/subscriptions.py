"""Graph subscriptions for a mailbox: what to ask for, when to renew, how to trust a notification.

CONTRACT.md section 1: Outlook message subscriptions live at most 10,080 minutes; ``clientState`` is at most 128
characters and must be checked on every notification; ``notificationUrl`` and ``lifecycleNotificationUrl`` are
both set at creation (the lifecycle URL cannot be added later). We subscribe to the whole mailbox
(``/users/{id}/messages``: Inbox and Sent Items alike) for ``created``, by the user's GUID (UPNs with an
apostrophe break, section 1.1). Graph takes one such subscription of this app per mailbox (a second is a 409), so
a mailbox has one, whichever of its users connected first, shared by all of them (R1).

Renewals are spread: each request asks for a lifetime somewhere in the last ``LIFETIME_SPREAD`` of the longest, so
mailboxes connected together (a school onboarding its staff in an hour) come up for renewal over days, not in one
timer run, and the hourly timer hands them to the lifecycle worker at ``RENEWALS_PER_SECOND``: subscription writes
are limited per app and tenant (section 1.4).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass

MAX_LIFETIME = dt.timedelta(minutes=10_080)
# Ask a little under the maximum: a request past it fails, and clocks drift.
LONGEST_LIFETIME = MAX_LIFETIME - dt.timedelta(minutes=30)
# Each request's lifetime is LONGEST_LIFETIME less up to this much, at random: a timer run meets about an hour's
# share of it (1/72) of mailboxes connected together, at the cost of renewing every 3 to 6 days rather than 6.
LIFETIME_SPREAD = dt.timedelta(hours=72)
# Renew when less than this is left: a day of slack covers a missed timer run or a Graph outage.
RENEWAL_WINDOW = dt.timedelta(hours=24)
# The pace at which the timer hands renewals to the lifecycle worker: well inside Graph's 500 subscription writes
# per 20 s per app and tenant (25/s, section 1.4), with room for connects and re-creations.
RENEWALS_PER_SECOND = 10
NOTIFICATIONS_ROUTE = "graph/notifications"
LIFECYCLE_ROUTE = "graph/lifecycle"


@dataclass(frozen=True)
class Subscription:
    """The Graph subscription of one mailbox, shared by every connection of it."""

    subscription_id: str
    mailbox: str  # connections.mailbox_key
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


def spread() -> float:
    """Where in ``LIFETIME_SPREAD`` a request's lifetime falls: a fraction in [0, 1)."""
    return secrets.randbelow(1_000_000) / 1_000_000


def requested_expiry(now: dt.datetime, spread: float = 0.0) -> dt.datetime:
    """The expiry to ask Graph for: the longest lifetime less ``spread`` (0 to 1) of ``LIFETIME_SPREAD``."""
    return now + LONGEST_LIFETIME - LIFETIME_SPREAD * min(max(spread, 0.0), 1.0)


def create_request(
    user_object_id: str, public_base_url: str, client_state: str, now: dt.datetime, spread: float = 0.0
) -> dict[str, str]:
    """The body of ``POST /subscriptions`` for a mailbox."""
    base = public_base_url.rstrip("/")
    return {
        "changeType": "created",
        "notificationUrl": f"{base}/api/{NOTIFICATIONS_ROUTE}",
        "lifecycleNotificationUrl": f"{base}/api/{LIFECYCLE_ROUTE}",
        "resource": resource_for(user_object_id),
        "expirationDateTime": iso(requested_expiry(now, spread)),
        "clientState": client_state,
        "latestSupportedTlsVersion": "v1_2",
    }


def renew_request(now: dt.datetime, spread: float = 0.0) -> dict[str, str]:
    return {"expirationDateTime": iso(requested_expiry(now, spread))}


def renewal_delays(count: int, per_second: int = RENEWALS_PER_SECOND) -> list[int]:
    """Seconds after which each of ``count`` renewals, soonest expiry first, is due at the worker: ``per_second``
    a second, so a timer run never sends Graph a burst of subscription writes."""
    return [index // per_second for index in range(count)]


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
