"""``GET …/messages`` and ``GET …/mailFolders/{id}/messages`` query options: ``$filter`` and ``$orderby``.

What Graph documents, and the emulator follows (CONTRACT.md section 4, "List paging", and section 11, "List
queries", from C ``api-reference/v1.0/api/user-list-messages.md`` @0273c463):

- a list query has no 5,000-message cap (that is delta's, section 7): it pages with ``$top`` (1 to 1,000) and
  ``@odata.nextLink``;
- ``$filter`` on ``receivedDateTime`` with a range, e.g. ``receivedDateTime ge 2017-04-01 and receivedDateTime lt
  2017-05-01`` (the docs' "emails received in April 2017" example, confirmed on a tenant by the maintainer in
  microsoftgraph/microsoft-graph-docs#6907);
- with ``$filter`` and ``$orderby`` in one query, the ``$orderby`` properties must also be in ``$filter``, in the
  same order, before any other: else 400 ``InefficientFilter`` "The restriction or sort order is too complex for
  this operation." (same page, "Using filter and orderby in the same query").

The emulator's limits (not Graph's): ``$filter`` takes only ``and``-joined comparisons on ``receivedDateTime``
(``eq ne gt ge lt le``) and ``isRead`` (``eq``/``ne`` ``true|false``); ``$orderby`` only ``receivedDateTime`` or
``isRead``, ``asc`` or ``desc``. Anything else is a 400 naming the option, never silently ignored. Without
``$orderby`` the order is the newest received first (assumption: Outlook's own view order; the docs do not say).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from devtools.emulator.mail_store import MailError, Message

_CLAUSE = re.compile(r"^\s*(receivedDateTime|isRead)\s+(eq|ne|gt|ge|lt|le)\s+(\S+)\s*$", re.IGNORECASE)
_ORDER = re.compile(r"^\s*(receivedDateTime|isRead)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)
_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,  # type: ignore[operator]
    "ge": lambda a, b: a >= b,  # type: ignore[operator]
    "lt": lambda a, b: a < b,  # type: ignore[operator]
    "le": lambda a, b: a <= b,  # type: ignore[operator]
}


@dataclass(frozen=True)
class Clause:
    prop: str  # "receivedDateTime" or "isRead"
    op: str
    value: dt.datetime | bool

    def matches(self, m: Message) -> bool:
        actual: object = m.received if self.prop == "receivedDateTime" else m.is_read
        return _COMPARE[self.op](actual, self.value)


def _time(raw: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_filter(raw: str | None) -> list[Clause]:
    """The clauses of a list ``$filter``; a 400 naming ``$filter`` for anything the emulator does not evaluate."""
    if raw is None:
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(part)
        try:
            if match is None:
                raise ValueError(part)
            prop, op, value = match.group(1), match.group(2).lower(), match.group(3)
            if prop.lower() == "isread":
                if op not in ("eq", "ne") or value.lower() not in ("true", "false"):
                    raise ValueError(part)
                clauses.append(Clause("isRead", op, value.lower() == "true"))
            else:
                clauses.append(Clause("receivedDateTime", op, _time(value)))
        except ValueError:
            raise MailError(
                400,
                "BadRequest",
                f"Invalid $filter '{raw}': the emulator evaluates only 'and'-joined comparisons of receivedDateTime "
                "(eq, ne, gt, ge, lt, le) and isRead (eq, ne).",
            ) from None
    return clauses


def parse_orderby(raw: str | None) -> list[tuple[str, bool]]:
    """``$orderby`` as (property, descending) pairs; a 400 naming ``$orderby`` for what the emulator cannot sort."""
    if raw is None:
        return []
    order = []
    for part in raw.split(","):
        match = _ORDER.match(part)
        if match is None:
            raise MailError(
                400, "BadRequest", f"Invalid $orderby '{raw}': the emulator sorts by receivedDateTime or isRead."
            )
        prop = "receivedDateTime" if match.group(1).lower() == "receiveddatetime" else "isRead"
        order.append((prop, (match.group(2) or "asc").lower() == "desc"))
    return order


def check_efficient(clauses: list[Clause], order: list[tuple[str, bool]]) -> None:
    """The three rules of "Using filter and orderby in the same query" (user-list-messages.md)."""
    if not clauses or not order:
        return
    filtered = list(dict.fromkeys(c.prop for c in clauses))  # each property once, in order of appearance
    ordered = [prop for prop, _ in order]
    if filtered[: len(ordered)] != ordered:
        raise MailError(400, "InefficientFilter", "The restriction or sort order is too complex for this operation.")


def select(messages: list[Message], raw_filter: str | None, raw_orderby: str | None) -> list[Message]:
    """The messages a list query answers, in its order (before paging)."""
    clauses, order = parse_filter(raw_filter), parse_orderby(raw_orderby)
    check_efficient(clauses, order)
    found = [m for m in messages if all(c.matches(m) for c in clauses)]
    found.sort(key=lambda m: (m.received, m.seq), reverse=True)  # the default: the newest first
    for prop, descending in reversed(order):  # a stable sort per key, the last key first
        found.sort(key=_sort_key(prop), reverse=descending)
    return found


def _sort_key(prop: str) -> Callable[[Message], dt.datetime | bool]:
    if prop == "receivedDateTime":
        return lambda m: m.received
    return lambda m: m.is_read
