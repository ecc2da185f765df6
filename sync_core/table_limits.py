"""What an Azure Table row can hold, and keeping a value within it (pure; no I/O).

Azure Table storage: a string property holds at most 64 KiB, UTF-16 encoded (32K characters); an entity holds at
most 1 MiB with all its properties, and 255 properties (learn.microsoft.com/azure/storage/tables/scalability-
targets; "Understanding the Table service data model", property types). Azurite refuses a longer string
(400 ``PropertyValueTooLarge``) but accepts entities far over 1 MiB (tried on Azurite 3.37.0: a 2.4 MB entity
and 300 properties went in), so rows are kept within the limits here, by construction, never by Azurite's
leave: whatever a hostile message brings (a 40,000-character subject, 3,000 recipients), a row's bounded
properties stay far below 1 MiB, and the rest is kept in a blob beside the message's body.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

STRING_UNITS = 32 * 1024  # UTF-16 code units in a string property (64 KiB)
MARKER = " [...]"  # ends a value that was cut short


def utf16_units(text: str) -> int:
    """How many UTF-16 code units ``text`` takes (characters beyond the BMP take two)."""
    return len(text) + sum(ord(ch) > 0xFFFF for ch in text)


def clip(text: str, units: int) -> str:
    """``text`` if it fits in ``units`` UTF-16 code units, else its start and ``MARKER`` within them."""
    if utf16_units(text) <= units:
        return text
    room, used = units - len(MARKER), 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            return text[:i] + MARKER
    return text  # unreachable: the whole text did not fit


def json_prefix(items: Sequence[object], units: int) -> tuple[str, int]:
    """The JSON of as many of ``items`` (from the start) as fit in ``units``, and how many that is."""
    text = json.dumps(list(items))
    if utf16_units(text) <= units:
        return text, len(items)
    low, high = 0, len(items)  # the longest prefix that fits: its JSON grows with its length
    while low < high:
        middle = (low + high + 1) // 2
        if utf16_units(json.dumps(list(items[:middle]))) <= units:
            low = middle
        else:
            high = middle - 1
    return json.dumps(list(items[:low])), low
