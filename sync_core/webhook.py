"""Graph's webhooks: the validation handshake, then screening each notification before anything is queued.

CONTRACT.md section 2: a ``validationToken`` query is answered first (200, text/plain, the decoded token) since
its POST has an empty text/plain body. Otherwise each item of the changeNotificationCollection is accepted only
if its subscription is known and live here, its ``clientState`` matches (constant time) and its tenant matches;
spoofed or stale items are counted and dropped, never queued. Accepted items are persisted to a queue and the
webhook answers 202 well inside Graph's 3 s (section 2.2); if the queue cannot be written it answers 503 so
Graph redelivers. The webhook makes no Graph call.

The endpoints are anonymous, so a request is screened before it costs a storage call: every subscriptionId must be
a GUID and every field is bounded (400 naming the item's field), a batch holds at most ``MAX_ITEMS`` items and
``MAX_SUBSCRIPTIONS`` distinct subscriptions (413), and an item whose clientState is not shaped like the ones we
issue is dropped unread. Graph documents no maximum batch size (section 3.1); its batches are one app's pending
notifications, far below these caps, and the screening of 100 subscriptions (one point read each) stays well inside
the 3 s Graph allows. Should a real batch ever exceed them, Graph redelivers it and the delta catch-up (every
15 minutes) fetches whatever a refused batch named, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sync_core.ids import Guid
from sync_core.results import Json, PlainText, Problem, parse_body
from sync_core.subscriptions import Subscription, client_state_matches, could_be_ours

MAX_BODY_BYTES = 4 * 1024 * 1024
# A queue message is at most 64 KiB and base64 adds a third: keep each packed message's JSON under 40 KiB.
MAX_PACKED_BYTES = 40 * 1024
MAX_ITEMS = 1000  # notifications per request
MAX_SUBSCRIPTIONS = 100  # distinct subscriptions per request: one point read each


# Generous bounds on what an item carries (Graph's ids are opaque: a kilobyte for one, two for a resource path; a
# tenant id is a GUID, a change type or lifecycle event a few words), so an accepted item always fits a queue message.
MAX_ID = 1024
MAX_RESOURCE = 2048
MAX_WORD = 64


class ResourceData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    id: str | None = Field(default=None, max_length=MAX_ID)


class ChangeNotification(BaseModel):
    """One item of Graph's changeNotificationCollection (CONTRACT.md section 3.1 / 3.2)."""

    model_config = ConfigDict(extra="ignore")
    subscriptionId: Guid
    clientState: str | None = Field(default=None, max_length=255)  # the changeNotification resource's maximum
    tenantId: str | None = Field(default=None, max_length=MAX_WORD)
    changeType: str | None = Field(default=None, max_length=MAX_WORD)
    resource: str | None = Field(default=None, max_length=MAX_RESOURCE)
    resourceData: ResourceData | None = None
    lifecycleEvent: str | None = Field(default=None, max_length=MAX_WORD)
    subscriptionExpirationDateTime: str | None = Field(default=None, max_length=MAX_WORD)


class ChangeNotificationCollection(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: list[ChangeNotification]


class PayloadTooLarge(Problem):
    status = 413


def validation_answer(query: Mapping[str, str]) -> PlainText | None:
    """Answer Graph's validation request, or None when this is a notification POST."""
    token = query.get("validationToken")
    return PlainText(200, token) if token is not None else None


def parse_collection(body: bytes) -> ChangeNotificationCollection:
    """The batch, screened before any storage call: its size, each item's shape, the caps (400 or 413)."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", fields=[{"field": "body"}])
    collection = parse_body(ChangeNotificationCollection, body, "change notification collection")
    if len(collection.value) > MAX_ITEMS:
        raise PayloadTooLarge(
            f"{len(collection.value)} notifications in one request; the limit is {MAX_ITEMS}",
            fields=[{"field": "value", "error": f"at most {MAX_ITEMS} items"}],
        )
    distinct = len({item.subscriptionId for item in collection.value})  # at least what screen_all looks up
    if distinct > MAX_SUBSCRIPTIONS:
        raise PayloadTooLarge(
            f"{distinct} distinct subscriptions in one request; the limit is {MAX_SUBSCRIPTIONS}",
            fields=[{"field": "value", "error": f"at most {MAX_SUBSCRIPTIONS} distinct subscriptionId values"}],
        )
    return collection


def screen(item: ChangeNotification, subscription: Subscription | None, now: dt.datetime) -> str | None:
    """Why an item must be dropped, or None to accept it."""
    if subscription is None:
        return "unknown_subscription"
    if not client_state_matches(subscription.client_state, item.clientState):
        return "client_state_mismatch"
    if item.tenantId is not None and item.tenantId.lower() != subscription.tenant_id.lower():
        return "tenant_mismatch"
    if subscription.expires_at <= now:
        return "subscription_expired"
    return None


@dataclass(frozen=True)
class Screened:
    accepted: list[tuple[ChangeNotification, Subscription]]
    rejected: Counter[str]


def screen_all(
    items: Iterable[ChangeNotification], lookup: Callable[[str], Subscription | None], now: dt.datetime
) -> Screened:
    """Screen a batch with at most one point read per distinct subscription, none for an item whose clientState we
    could not have issued."""
    seen: dict[str, Subscription | None] = {}
    accepted: list[tuple[ChangeNotification, Subscription]] = []
    rejected: Counter[str] = Counter()
    for item in items:
        if not could_be_ours(item.clientState):  # a forgery: no read spent on it
            rejected["client_state_mismatch"] += 1
            continue
        if item.subscriptionId not in seen:
            seen[item.subscriptionId] = lookup(item.subscriptionId)
        subscription = seen[item.subscriptionId]
        reason = screen(item, subscription, now)
        if reason is None and subscription is not None:
            accepted.append((item, subscription))
        else:
            rejected[reason or "unknown_subscription"] += 1
    return Screened(accepted, rejected)


def message_ref(item: ChangeNotification, subscription: Subscription) -> dict[str, str]:
    """What the worker needs to fetch a notified message; ``resourceData.id`` is the id to use (section 3.1).

    One reference per message of the mailbox, whichever users connected it: the worker fetches it once and decides
    for each connection of the mailbox (R1)."""
    message_id = item.resourceData.id if item.resourceData and item.resourceData.id else ""
    if not message_id and item.resource:
        message_id = item.resource.rstrip("/").rsplit("/", 1)[-1]
    return {
        "subscription_id": subscription.subscription_id,
        "mailbox": subscription.mailbox,
        "message_id": message_id,
        "change_type": item.changeType or "",
    }


def pack(refs: Sequence[Mapping[str, Any]], limit: int = MAX_PACKED_BYTES, attempt: int = 0) -> list[str]:
    """Pack references into as few queue messages as fit (a batch of hundreds is a handful of puts).

    ``attempt`` counts how often the references were tried already (a re-queued remainder of a pack)."""
    envelope = {"attempt": attempt} if attempt else {}
    messages: list[str] = []
    batch: list[Mapping[str, Any]] = []
    size = 0
    for ref in refs:
        encoded = len(json.dumps(ref)) + 2
        if batch and size + encoded > limit:
            messages.append(json.dumps({"refs": batch, **envelope}))
            batch, size = [], 0
        batch.append(ref)
        size += encoded
    if batch:
        messages.append(json.dumps({"refs": batch, **envelope}))
    return messages


def acknowledgement(screened: Screened, queued_messages: int) -> Json:
    return Json(
        202,
        {
            "accepted": len(screened.accepted),
            "rejected": dict(screened.rejected),
            "queued_messages": queued_messages,
        },
    )
