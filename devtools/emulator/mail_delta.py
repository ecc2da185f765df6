"""Delta query on ``mailFolders/{id}/messages/delta`` (CONTRACT.md section 7), per folder.

A round covers the changes in ``(since, upto]`` of the mailbox change sequence: ``upto`` is fixed when the round
starts, pages continue after the last sequence number served (``$skiptoken``), and the last page's
``$deltatoken`` starts the next round at ``upto``. A message changed during a round gets a number above ``upto``
and so comes in the next round. Tokens are opaque to clients and carry the original ``$select``; a token from
before the mailbox's delta epoch answers 410 Gone with a ``Location`` holding an empty ``$deltatoken`` URL.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from typing import Any

from devtools.emulator.mail_render import View, message_json
from devtools.emulator.mail_store import Folder, MailboxData, MailError, Message, Tombstone

PAGE_SIZE = 10  # when the client states no odata.maxpagesize


@dataclass(frozen=True)
class DeltaToken:
    mailbox_id: str
    folder_id: str
    select: list[str] | None
    epoch: int
    since: int  # changes after this sequence number (-1: the first round, the folder's current state) ...
    upto: int  # ... up to and including this one (the round's end; unused in a deltatoken)
    after: int  # the page starts after this sequence number

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps(asdict(self), separators=(",", ":")).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str, parameter: str) -> DeltaToken:
        try:
            data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            return cls(**data)
        except (ValueError, TypeError):
            raise MailError(400, "BadRequest", f"{parameter} is not a token this service issued.") from None


class DeltaGone(Exception):
    """The token predates a reset: the client must start over from the empty-token URL."""


@dataclass(frozen=True)
class DeltaPage:
    items: list[dict[str, Any]]
    next_token: DeltaToken
    is_last: bool  # then next_token is the deltatoken of the next round, else the skiptoken of the next page


def start_token(box: MailboxData, folder: Folder, select: list[str] | None) -> DeltaToken:
    """The state before anything happened: a round from it returns the folder's current content."""
    return DeltaToken(box.mailbox.id, folder.id, select, box.delta_epoch, since=-1, upto=-1, after=-1)


def page(box: MailboxData, token: DeltaToken, page_size: int, view: View) -> DeltaPage:
    """The next page of the round ``token`` belongs to (starting a round when ``token.upto`` is unset)."""
    if token.mailbox_id != box.mailbox.id or token.folder_id not in box.folders:
        raise MailError(400, "BadRequest", "The delta token belongs to another mailbox or folder.")
    if token.epoch != box.delta_epoch:
        raise DeltaGone()
    upto = box.seq if token.upto < 0 else token.upto
    since, after = token.since, max(token.after, token.since)
    window: list[Message | Tombstone] = [m for m in box.in_folder(token.folder_id) if after < m.seq <= upto]
    if since >= 0:  # the first round reports the current state only; later rounds also report removals
        window += [t for t in box.tombstones[token.folder_id].values() if after < t.seq <= upto]
    window.sort(key=lambda item: item.seq)
    served, rest = window[:page_size], window[page_size:]
    items = [_item(x, view, token.select) for x in served]
    if rest:
        return DeltaPage(items, DeltaToken(**{**asdict(token), "upto": upto, "after": served[-1].seq}), False)
    return DeltaPage(items, DeltaToken(**{**asdict(token), "since": upto, "upto": -1, "after": upto}), True)


def _item(x: Message | Tombstone, view: View, select: list[str] | None) -> dict[str, Any]:
    if isinstance(x, Tombstone):
        # A message that left the folder, moved or deleted, is reported as removed with reason "deleted".
        removed_id = x.immutable_id if view.immutable_ids else x.rest_id
        return {"@odata.type": "#microsoft.graph.message", "id": removed_id, "@removed": {"reason": "deleted"}}
    return {"@odata.type": "#microsoft.graph.message", **message_json(x, view, select)}
