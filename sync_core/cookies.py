"""One cookie's value from a Cookie request header, whatever else the header holds.

A browser sends every cookie of the site (RFC 6265 section 5.4: ``name=value`` pairs joined by ``; ``), and other
applications on Enrollio's domain set cookies this service does not control. ``http.cookies.SimpleCookie`` raises
on some names (``a@b``) and silently drops every cookie after a value it dislikes (``a b``), so a user with such a
cookie could not finish connecting Outlook. Only the pair we look for matters: split, compare names, done.
"""

from __future__ import annotations

import re

# Pairs are separated by ';' (RFC 6265); ',' too, as some proxies fold repeated headers (a cookie-octet holds neither).
_SEPARATOR = re.compile(r"[;,]")


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of the first cookie called ``name`` (the most specific path comes first, RFC 6265 section 5.4),
    unquoted; None when there is none."""
    for pair in _SEPARATOR.split(header or ""):
        key, equals, value = pair.partition("=")
        if equals and key.strip() == name:
            value = value.strip()
            quoted = len(value) >= 2 and value[0] == value[-1] == '"'
            return value[1:-1] if quoted else value
    return None
