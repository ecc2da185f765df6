"""The connect flow's browser-binding cookie, as the app sends it over HTTPS (as in Azure).

Microsoft's ``form_post`` brings the browser back with a cross-site POST, so the cookie must be ``SameSite=None``
(which browsers accept only with ``Secure``): without it, Chromium sends the cookie on that POST only within two
minutes of setting it, and a sign-in with MFA or consent can take longer. ``tests/browser`` checks the cookie as
Chromium stored it; this checks the header the app sends, where no browser is installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite
from devtools.stack import Stack, offline_stack
from sync_core.connect import BROWSER_COOKIE, CALLBACK_ROUTE


@pytest.fixture(scope="module")
def https_stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with offline_stack(azurite, tmp_path_factory.mktemp("https-stack"), https=True) as running:
        yield running


def attributes(set_cookie: str) -> tuple[str, dict[str, str]]:
    """A ``Set-Cookie`` value: (its name, its attributes by lower-case name; flags map to "")."""
    pair, *rest = (part.strip() for part in set_cookie.split(";"))
    found: dict[str, str] = {}
    for attribute in rest:
        key, _, value = attribute.partition("=")
        found[key.lower()] = value
    return pair.partition("=")[0], found


def test_over_https_the_connect_cookie_is_samesite_none_secure_httponly_for_the_callback_only(
    https_stack: Stack,
) -> None:
    link = https_stack.enrollio.connect_link("user-cookie", login_hint=https_stack.new_mailbox("cookie"))

    to_microsoft = https_stack.browser().get(link, allow_redirects=False)

    assert to_microsoft.status_code == 302
    name, cookie = attributes(to_microsoft.headers["Set-Cookie"])
    assert name == BROWSER_COOKIE
    assert cookie == {
        "path": f"/api/{CALLBACK_ROUTE}",
        "max-age": "600",
        "httponly": "",
        "samesite": "None",
        "secure": "",
    }


def test_the_https_connect_flow_completes_with_that_cookie(https_stack: Stack) -> None:
    outcome = https_stack.connect("user-cookie-flow", https_stack.new_mailbox("cookie-flow"))
    assert outcome["outcome"] == "connected"
