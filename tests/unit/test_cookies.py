"""The browser-binding cookie read from a Cookie header as browsers send it: the site's other cookies, however
malformed, neither hide it nor break the request (review of i12, finding 2)."""

from __future__ import annotations

import pytest

from sync_core.cookies import cookie_value

NAME = "enrollio_outlook_connect"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (f"{NAME}=abc", "abc"),
        (f"other=1; {NAME}=abc; third=3", "abc"),
        # other cookies of the site that http.cookies.SimpleCookie refuses (a CookieError, a 500) or stops at
        # (every cookie after it silently dropped)
        (f"a@b=c; {NAME}=abc", "abc"),
        (f"a(b)=1; {NAME}=abc", "abc"),
        (f"a/b=1; {NAME}=abc", "abc"),
        (f"other=a b; {NAME}=abc", "abc"),
        (f'x="y; {NAME}=abc', "abc"),
        (f"flag; {NAME}=abc", "abc"),  # a part without '='
        (f"{NAME}=abc;", "abc"),
        (f"  {NAME}  =  abc  ", "abc"),
        (f'{NAME}="abc"', "abc"),  # RFC 6265 lets a value be quoted
        (f"{NAME}=a=b", "a=b"),  # the value runs to the next ';'
        (f"{NAME}=first; {NAME}=second", "first"),  # the most specific path comes first (RFC 6265 section 5.4)
        (f"one=1, {NAME}=abc", "abc"),  # headers a proxy folded into one with ','
        (f"{NAME}=", ""),
    ],
)
def test_the_cookie_is_found_among_any_others(header: str, value: str) -> None:
    assert cookie_value(header, NAME) == value


@pytest.mark.parametrize(
    "header",
    [None, "", ";;;", "=", "=abc", f"x{NAME}=abc", f"{NAME}x=abc", f"{NAME.upper()}=abc", f"{NAME}", "\x00\xff\ud800"],
)
def test_no_cookie_of_that_name_is_none(header: str | None) -> None:
    assert cookie_value(header, NAME) is None


def test_a_huge_header_is_read_without_trouble() -> None:
    header = "; ".join(f"c{i}=v" for i in range(20_000)) + f"; {NAME}=abc"
    assert cookie_value(header, NAME) == "abc"
