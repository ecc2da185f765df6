"""The operator's actions on one connection, each a thin call into the use case the service itself runs.

- ``resync``: ask for a delta catch-up (``catchup_queue.request_catchup``); the app's catch-up worker runs it.
- ``renew``: queue a ``renew`` event for its mailbox's Graph subscription on ``lifecycle-events`` (a mailbox several
  users connected has one, shared); the app's lifecycle worker renews it as the hourly timer would (``upkeep``: a
  404 re-creates it, a lost grant marks that connection ``needs_reconnect`` and another's token is tried).
  Queueing needs only storage: no Graph client, no secrets in the operator's shell.
- ``disconnect``: R8, as Enrollio's disconnect (``connect.disconnect``); this one acts at Graph itself.
A connection is named by its id or its mailbox address; ``--user`` settles an address two users connected.
"""

from __future__ import annotations

from typing import Any

from sync_core import names
from sync_core.adapters.connection_store import ConnectionStore, SubscriptionStore
from sync_core.catchup_queue import request_catchup
from sync_core.connect import DisconnectRequest, disconnect
from sync_core.connections import Connection
from sync_core.ops.context import OpsContext
from sync_core.upkeep import RENEW, LifecycleEvent

OPERATOR_RESYNC = "operator_resync"


class NotFound(LookupError):
    """No connection, or more than one, answers to what the operator named; the message says which."""


class NothingToDo(LookupError):
    """The connection is not in a state the action applies to; the message says what to do instead."""


def find_connection(ctx: OpsContext, name: str, user_id: str | None = None) -> Connection:
    """The one connection with this id or address (of ``user_id`` when given)."""
    found = [c for c in ConnectionStore(ctx.storage.tables).find(name) if user_id is None or c.user_id == user_id]
    if not found:
        owner = f" of user {user_id!r}" if user_id else ""
        raise NotFound(f"no connection{owner} has the id or address {name!r}")
    if len(found) > 1:
        users = ", ".join(sorted(c.user_id for c in found))
        raise NotFound(f"{name!r} is connected by several users ({users}): name one with --user")
    return found[0]


def resync(ctx: OpsContext, connection: Connection) -> dict[str, Any]:
    request_catchup(connection, OPERATOR_RESYNC, ctx)
    return {"connection_id": connection.connection_id, "address": connection.address, "catchup": "requested"}


def renew(ctx: OpsContext, connection: Connection) -> dict[str, Any]:
    subscription = SubscriptionStore(ctx.storage.tables).of_mailbox(connection.mailbox)  # shared by its users
    if not connection.syncs or subscription is None:
        raise NothingToDo(
            f"{connection.address} has no subscription to renew ({connection.status.value}): only a sign-in "
            "creates one where none is recorded, so its user connects the mailbox again in Enrollio (`resync` "
            "catches mail up through delta meanwhile, it does not subscribe)"
        )
    event = LifecycleEvent(subscription_id=subscription.subscription_id, event=RENEW)
    ctx.storage.queue(names.QUEUE_LIFECYCLE).send_message(event.model_dump_json(exclude_defaults=True))
    return {
        "connection_id": connection.connection_id,
        "address": connection.address,
        "renewal_queued": [subscription.subscription_id],
    }


def disconnect_connection(ctx: OpsContext, connection: Connection) -> dict[str, Any]:
    request = DisconnectRequest(user_id=connection.user_id, connection_id=connection.connection_id)
    return dict(disconnect(request, ctx.services).body)
