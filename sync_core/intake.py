"""The webhook use cases: screen what Graph posted and persist it to a queue before acknowledging.

Notifications become packed message references on ``inbound-messages``; lifecycle events become one message
each on ``lifecycle-events``. Storage failures propagate (the shell answers 503, so Graph redelivers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from sync_core import names, telemetry
from sync_core.results import Json, PlainText
from sync_core.services import Services
from sync_core.webhook import (
    acknowledgement,
    message_ref,
    pack,
    parse_collection,
    screen_all,
    validation_answer,
)

log = logging.getLogger(__name__)


def receive_notifications(query: Mapping[str, str], body: bytes, services: Services) -> PlainText | Json:
    if (answer := validation_answer(query)) is not None:
        return answer
    now = services.clock.now()
    screened = screen_all(parse_collection(body).value, services.subscriptions.get, now)
    # Each reference carries the notification's correlation id: the worker's span joins this request's trace.
    cid = {"correlation_id": telemetry.correlation_id()} if telemetry.correlation_id() else {}
    refs = [{**message_ref(item, sub), **cid} for item, sub in screened.accepted if item.lifecycleEvent is None]
    messages = pack(refs)
    queue = services.storage.queue(names.QUEUE_INBOUND)
    for message in messages:
        queue.send_message(message)
    for mailbox in {s.mailbox for _, s in screened.accepted if s.mailbox}:
        services.mailboxes.touch(mailbox, now)
    telemetry.notifications.add(len(screened.accepted), {"outcome": "accepted"})
    for reason, count in screened.rejected.items():
        telemetry.notifications.add(count, {"outcome": "refused", "reason": reason})
    if screened.rejected:
        log.warning("dropped notifications: %s", dict(screened.rejected))
    log.info("notifications: %d accepted, %d queue messages", len(screened.accepted), len(messages))
    return acknowledgement(screened, len(messages))


def receive_lifecycle(query: Mapping[str, str], body: bytes, services: Services) -> PlainText | Json:
    if (answer := validation_answer(query)) is not None:
        return answer
    screened = screen_all(parse_collection(body).value, services.subscriptions.get, services.clock.now())
    queue = services.storage.queue(names.QUEUE_LIFECYCLE)
    queued = 0
    for item, subscription in screened.accepted:
        if item.lifecycleEvent:
            event = {"subscription_id": subscription.subscription_id, "event": item.lifecycleEvent}
            queue.send_message(json.dumps({**event, "correlation_id": telemetry.correlation_id()}))
            queued += 1
    if screened.rejected:
        log.warning("dropped lifecycle notifications: %s", dict(screened.rejected))
    return acknowledgement(screened, queued)
