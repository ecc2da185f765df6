"""The emulator's world: one tenant, its mailboxes and everything in them.

Every mutation happens under ``World.lock``. Other modules extend the world with their own state
(messages and folders in ``mail.py``'s structures, grants in ``identity.py``, subscriptions in
``subscriptions.py``) and talk through ``World.publish``: a change to a message is published once, and
whoever cares (change notifications) listens.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

ChangeType = Literal["created", "updated", "deleted"]


@dataclass
class Mailbox:
    id: str  # a GUID, as Graph's /users/{id}
    address: str  # mail / userPrincipalName
    display_name: str
    tenant_id: str


@dataclass(frozen=True)
class Change:
    """A change to an item in a mailbox, as Exchange would raise it for change notifications."""

    change_type: ChangeType
    mailbox_id: str
    folder_id: str  # the item's parent folder id at the time of the change
    resource_kind: Literal["message"]
    item_id: str  # the item's id (immutable form)
    etag: str = ""


Listener = Callable[[Change], None]


@dataclass
class World:
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _listeners: list[Listener] = field(default_factory=list)
    # Free-form extension slots for the modules that own more state (keyed by module name).
    ext: dict[str, Any] = field(default_factory=dict)

    def add_mailbox(self, address: str, display_name: str | None = None) -> Mailbox:
        with self.lock:
            if existing := self.mailbox(address):
                return existing
            mailbox = Mailbox(
                id=str(uuid.uuid4()),
                address=address,
                display_name=display_name or address.split("@")[0].replace(".", " ").title(),
                tenant_id=self.tenant_id,
            )
            self.mailboxes[mailbox.id] = mailbox
            return mailbox

    def mailbox(self, id_or_address: str) -> Mailbox | None:
        """Look a mailbox up by GUID or (case-insensitively) by address."""
        with self.lock:
            if found := self.mailboxes.get(id_or_address):
                return found
            wanted = id_or_address.lower()
            return next((m for m in self.mailboxes.values() if m.address.lower() == wanted), None)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, change: Change) -> None:
        """Tell every listener about a change. Listeners must not block (queue the work)."""
        for listener in list(self._listeners):
            listener(change)
