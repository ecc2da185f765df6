"""Sender routing (R7, with R3 and R8): does this email go out through an Outlook connection or not?

"Account provider" is Enrollio's own sender: this service only answers "use it", with the rule that decided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sync_core.connections import Connection, Status, active_connection

# Every reason a route names (the ``reason`` of ``POST /api/send``'s answer; the OpenAPI document lists them).
REASONS = (
    "individual_via_outlook",
    "bulk_from_matches_outlook",
    "reply_in_thread",
    "workflow_uses_account_provider",
    "bulk_from_blank",
    "bulk_from_not_connected_address",
    "bulk_from_not_thread_address",
    "no_connected_outlook",
    "connection_needs_reconnect",
    "connection_disconnected",
    "thread_has_no_connection",
)
OUTLOOK_REASONS = ("individual_via_outlook", "bulk_from_matches_outlook", "reply_in_thread")  # the rest: not Outlook


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


# A From field is an address, or a name and an address in angle brackets (RFC 5322 name-addr). The name may be
# anything (quoted or not, with commas or an "@"): only what is in the brackets counts, and there must be exactly
# one pair of them ("A <a@x.io>, B <b@x.io>" names two addresses, so none). A hand rule rather than
# email.utils.getaddresses, whose reading of malformed lists has changed between Python releases.
_BARE = re.compile(r"^\s*([^<>\s@,]+@[^<>\s@,]+)\s*$")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a quoted display name, escapes included
_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@,]+@[^<>\s@,]+)\s*>\s*$")


def from_address(from_field: str | None) -> str:
    """The address of a From field (``alex@school.example``, ``Alex Doe <alex@school.example>``,
    ``"Doe, Alex" <alex@school.example>``), lower-cased; "" when it names no single address."""
    if match := _BARE.match(from_field or ""):
        return match.group(1).lower()
    unquoted = _QUOTED.sub('""', from_field or "")
    match = _ANGLE_ADDR.search(unquoted)
    if match is None or unquoted.count("<") != 1 or unquoted.count(">") != 1:
        return ""
    return match.group(1).lower()


def _same_address(from_field: str | None, address: str) -> bool:
    return from_address(from_field) == address.strip().lower() != ""


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
    """Decide the sender for one email of a user whose connections are ``connections``.

    R7's rule first, then the thread: a reply goes out from its thread's mailbox, even after Update Email made
    another one active (R3), and a bulk email's From must be the address it would go out from (the thread's
    mailbox for a reply, the active connection otherwise).
    """
    if kind is Kind.WORKFLOW:
        return Route(None, "workflow_uses_account_provider")
    sender = thread_connection if is_reply else active_connection(connections)
    if kind is Kind.BULK:
        if not from_field or not from_field.strip():
            return Route(None, "bulk_from_blank")
        if sender is None or not _same_address(from_field, sender.address):
            # A reply goes out from its thread's mailbox: a From of another of the user's connected addresses (the
            # active one after Update Email) is not "not connected", it is not the thread's.
            connected = any(
                c.status is not Status.DISCONNECTED and _same_address(from_field, c.address) for c in connections
            )
            return Route(
                None, "bulk_from_not_thread_address" if is_reply and connected else "bulk_from_not_connected_address"
            )
    if sender is None or not sender.can_send:
        return Route(None, _unusable(sender, "thread_has_no_connection" if is_reply else "no_connected_outlook"))
    if is_reply:
        return Route(sender, "reply_in_thread")
    return Route(sender, "bulk_from_matches_outlook" if kind is Kind.BULK else "individual_via_outlook")
