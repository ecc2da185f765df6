"""Delta query on ``mailFolders/{id}/messages/delta`` (CONTRACT.md section 7), per folder.

A round covers the changes in ``(since, upto]`` of the mailbox change sequence: ``upto`` is fixed when the round
starts, pages continue after the last sequence number served (``$skiptoken``), and the last page's
``$deltatoken`` starts the next round at ``upto``. A message changed during a round gets a number above ``upto``
and so comes in the next round. Tokens are opaque to clients and carry the original ``$select``; a token from
before the mailbox's delta epoch answers 410 Gone with a ``Location`` holding an empty ``$deltatoken`` URL.

``$filter`` takes only ``receivedDateTime ge|gt {value}`` (anything else is a 400), given on the first request and
kept in the tokens like ``$select``; with it, a round returns at most 5,000 messages (CONTRACT.md section 7) and
ends with a deltaLink as if complete, every round of it (the deltaLink carries the filter). Assumptions, where the
documentation says no more than that:

- which 5,000: the most recently received ones (the documentation does not say; the product must not rely on it);
- what the filter bounds: the first round's initial state only. Later rounds report every change in the folder,
  also to messages received before the filter's time (a read-state change, a flag, a message moved in), and
  removals whatever the filter. Evidence (CONTRACT.md section 11): the closed, unmerged docs pull request
  microsoftgraph/microsoft-graph-docs-contrib#9760 (as the issue-10 review reported it: a filtered message delta
  still returns read/unread state changes and ``@removed`` entries outside the filter); alcionai/corso#1866 saw
  read-flag changes come through delta only when ``isRead`` was selected. The emulator takes the least kind
  reading: any change, whatever ``$select``, so that the product enforces R8 itself (``matching.decide``'s
  ``sync_from``) rather than relying on the filter.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from devtools.emulator.mail_render import View, message_json
from devtools.emulator.mail_store import Folder, MailboxData, MailError, Message, Tombstone

PAGE_SIZE = 10  # when the client states no odata.maxpagesize
FILTERED_ROUND_CAP = 5000  # "$filter ... and then at most 5,000 messages" (CONTRACT.md section 7)
_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ReceivedFilter:
    """``receivedDateTime ge|gt {value}``: the only ``$filter`` delta supports on messages."""

    op: str  # "ge" or "gt"
    value: str  # ISO 8601, as the client wrote it

    def matches(self, received: dt.datetime) -> bool:
        bound = _parse_time(self.value)
        return received >= bound if self.op == "ge" else received > bound


def _parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_filter(raw: str | None) -> ReceivedFilter | None:
    """The delta ``$filter``, or a 400 naming it when it is anything but ``receivedDateTime ge|gt {value}``."""
    if raw is None:
        return None
    match = _FILTER.match(raw)
    try:
        if match is None:
            raise ValueError(raw)
        _parse_time(match.group(2))
    except ValueError:
        raise MailError(
            400,
            "BadRequest",
            f"Invalid $filter '{raw}': the only supported expressions are receivedDateTime ge {{value}} and "
            "receivedDateTime gt {value}.",
        ) from None
    return ReceivedFilter(match.group(1).lower(), match.group(2))


@dataclass(frozen=True)
class DeltaToken:
    mailbox_id: str
    folder_id: str
    select: list[str] | None
    epoch: int
    since: int  # changes after this sequence number (-1: the first round, the folder's current state) ...
    upto: int  # ... up to and including this one (the round's end; unused in a deltatoken)
    after: int  # the page starts after this sequence number
    received_filter: list[str] | None = None  # [op, value] of the round's $filter, kept like $select

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


def start_token(
    box: MailboxData, folder: Folder, select: list[str] | None, received: ReceivedFilter | None = None
) -> DeltaToken:
    """The state before anything happened: a round from it returns the folder's current content."""
    kept = [received.op, received.value] if received else None
    return DeltaToken(
        box.mailbox.id, folder.id, select, box.delta_epoch, since=-1, upto=-1, after=-1, received_filter=kept
    )


def _in_round(box: MailboxData, token: DeltaToken, upto: int) -> list[Message]:
    """The folder's messages a round reports: changed in it; if filtered, at most the cap of those matching the
    filter, plus (after the first round) the changes to older messages (see the module's assumptions)."""
    messages = [m for m in box.in_folder(token.folder_id) if token.since < m.seq <= upto]
    if token.received_filter is None:
        return messages
    received = ReceivedFilter(*token.received_filter)
    matching = [m for m in messages if received.matches(m.received)]
    capped = sorted(matching, key=lambda m: (m.received, m.seq))[-FILTERED_ROUND_CAP:]
    if token.since < 0:  # the first round: the folder's current state, within the filter
        return capped
    return capped + [m for m in messages if not received.matches(m.received)]


def page(box: MailboxData, token: DeltaToken, page_size: int, view: View) -> DeltaPage:
    """The next page of the round ``token`` belongs to (starting a round when ``token.upto`` is unset)."""
    if token.mailbox_id != box.mailbox.id or token.folder_id not in box.folders:
        raise MailError(400, "BadRequest", "The delta token belongs to another mailbox or folder.")
    if token.epoch != box.delta_epoch:
        raise DeltaGone()
    upto = box.seq if token.upto < 0 else token.upto
    since, after = token.since, max(token.after, token.since)
    window: list[Message | Tombstone] = [m for m in _in_round(box, token, upto) if m.seq > after]
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
