"""Sender routing (R7, with R3 and R8): does this email go out through an Outlook connection or not?

"Account provider" is Enrollio's own sender: this service only answers "use it", with the rule that decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sync_core.connections import Connection, Status, active_connection


class Kind(StrEnum):
    INDIVIDUAL = "individual"
    BULK = "bulk"
    WORKFLOW = "workflow"


@dataclass(frozen=True)
class Route:
    connection: Connection | None  # None: the account-level provider
    reason: str

    @property
    def via_outlook(self) -> bool:
        return self.connection is not None


def _same_address(a: str | None, b: str) -> bool:
    return a is not None and a.strip().lower() == b.strip().lower()


def _unusable(connection: Connection | None, none_reason: str) -> str:
    if connection is None:
        return none_reason
    return "connection_needs_reconnect" if connection.status is Status.NEEDS_RECONNECT else "connection_disconnected"


def route(
    kind: Kind,
    connections: list[Connection],
    from_field: str | None = None,
    thread_connection: Connection | None = None,
    is_reply: bool = False,
) -> Route:
    """Decide the sender for one email of a user whose connections are ``connections``."""
    if kind is Kind.WORKFLOW:
        return Route(None, "workflow_uses_account_provider")
    if is_reply:
        # A reply stays in its thread's mailbox, even after Update Email made another one active (R3).
        if thread_connection is not None and thread_connection.can_send:
            return Route(thread_connection, "reply_in_thread")
        return Route(None, _unusable(thread_connection, "thread_has_no_connection"))
    active = active_connection(connections)
    if kind is Kind.BULK:
        if not from_field or not from_field.strip():
            return Route(None, "bulk_from_blank")
        if active is None or not _same_address(from_field, active.address):
            return Route(None, "bulk_from_not_connected_address")
    if active is None or not active.can_send:
        return Route(None, _unusable(active, "no_connected_outlook"))
    return Route(active, "bulk_from_matches_outlook" if kind is Kind.BULK else "individual_via_outlook")
