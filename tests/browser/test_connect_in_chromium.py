"""The connect flow in a real browser: headless Chromium (Debian's, driven by Selenium and chromium-driver) from
Enrollio's signed link, through Microsoft's sign-in (the emulator) and its ``form_post``, the browser-binding
cookie check, to the redirect back to Enrollio.

As in Azure, the function app is served over HTTPS (``https://localhost:<port>``, a certificate made for the
run) and the sign-in page is another site (``https://127.0.0.1:<port>``), so the ``form_post`` back is a
cross-site POST. That the browser brings the nonce cookie along proves little on its own: Chromium also sends a
cookie without ``SameSite`` (treated as ``Lax``) on a top-level cross-site POST within two minutes of setting it,
and a sign-in here takes seconds. A real sign-in can take longer (MFA, consent), so the test reads the cookie as
the browser stored it (DevTools' ``Network.getAllCookies``) and requires ``SameSite=None`` and ``Secure``.
Enrollio's settings page is a small HTTPS server at ``app.enrollio.example`` (mapped to 127.0.0.1 inside the
browser). The browser trusts exactly the three generated certificates (``--ignore-certificate-errors-spki-list``
names their public keys; Chromium honours it with a fresh ``--user-data-dir``), not every certificate. The
emulator signs in the ``login_hint`` mailbox without an interactive page (its documented choice), so the browser
runs Microsoft's ``form_post`` page script and nothing is clicked. A screenshot of the final Enrollio page is kept in
``.run/test-artifacts/`` (not committed).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devtools.azurite import Azurite
from devtools.emulator.tls import TlsFiles, make_self_signed
from devtools.ports import free_port
from devtools.stack import Stack, offline_stack
from sync_core.connect import BROWSER_COOKIE, CALLBACK_ROUTE

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".run" / "test-artifacts"
# CHROMIUM_PATH and CHROMEDRIVER_PATH name other builds (or a missing one, to check the rule below).
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_PATH") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
ENROLLIO_HOST = "app.enrollio.example"
MISSING = "Debian's chromium and chromium-driver are not installed (`make setup` installs them as root with apt-get)"


@pytest.fixture(scope="module", autouse=True)
def browser_installed() -> None:
    """Without the browser these tests skip, saying why; where REQUIRE_BROWSER=1 (CI, ``.ci/run``) they fail."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{MISSING}, and REQUIRE_BROWSER=1 (CI) requires the browser test to run", pytrace=False)
    pytest.skip(MISSING)


@dataclass
class EnrollioSite:
    """Enrollio's settings page at ``https://app.enrollio.example:<port>/``: shows the outcome it is sent back with."""

    tls: TlsFiles
    port: int
    visits: list[dict[str, str]] = field(default_factory=list)

    @property
    def return_url(self) -> str:
        return f"https://{ENROLLIO_HOST}:{self.port}/settings/email"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        outcome = {k: v[0] for k, v in parse_qs(request.query_string.decode()).items()}
        self.visits.append(outcome)
        if outcome.get("outcome") == "connected":
            text = f"Outlook connected: {escape(outcome.get('address', ''))}. Email now goes out from this mailbox."
        else:
            text = f"Outlook not connected: {escape(outcome.get('reason', 'unknown'))}"
        page = (
            "<!doctype html><html><head><title>Enrollio: Email settings</title></head>"
            "<body style='font-family:sans-serif;margin:3em'><h1>Enrollio</h1><h2>Settings &rsaquo; Email (2-way sync)"
            f"</h2><p id='outcome'>{text}</p></body></html>"
        )
        return Response(page, mimetype="text/html")(environ, start_response)


@pytest.fixture(scope="module")
def enrollio_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnrollioSite]:
    tls = make_self_signed(
        tmp_path_factory.mktemp("enrollio"), ENROLLIO_HOST, stem="enrollio", dns_names=(ENROLLIO_HOST,)
    )
    site = EnrollioSite(tls, free_port())
    server = make_server(
        "127.0.0.1", site.port, site, threaded=True, ssl_context=(str(tls.cert_path), str(tls.key_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


def spki_hash(cert_path: Path) -> str:
    """What ``--ignore-certificate-errors-spki-list`` names: base64 SHA-256 of the certificate's public key."""
    key = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium(profile: Path, trusted: list[Path]) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1000,600", f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP {ENROLLIO_HOST} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={','.join(spki_hash(p) for p in trusted)}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def connect_in_browser(stack: Stack, site: EnrollioSite, profile: Path, user_id: str) -> tuple[Any, str]:
    """Open Enrollio's signed link in Chromium and wait until the flow settles; (the driver, the page's text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mailbox = stack.new_mailbox("browser")
    link = stack.enrollio.connect_link(user_id, login_hint=mailbox, return_url=site.return_url)
    trusted = [stack.emulator.ca_path, site.tls.cert_path, *([stack.host_tls.cert_path] if stack.host_tls else [])]
    driver = chromium(profile, trusted)
    try:
        driver.get(link)
        # Done when the browser is back at Enrollio, or the app answered the callback with its own page.
        WebDriverWait(driver, 30).until(
            lambda d: d.current_url.startswith(site.return_url) or "/api/outlook/callback" in d.current_url
        )
        return driver, driver.find_element(By.TAG_NAME, "body").text
    except BaseException:
        driver.quit()
        raise


def test_connect_in_chromium_ends_on_enrollio_with_the_mailbox_connected(
    azurite: Azurite, enrollio_site: EnrollioSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = f"https://{ENROLLIO_HOST}:{enrollio_site.port}/"
    with offline_stack(azurite, tmp_path / "stack", https=True, ENROLLIO_RETURN_URLS=allowed) as stack:
        driver, text = connect_in_browser(stack, enrollio_site, tmp_path / "profile", "user-browser")
        try:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            screenshot = ARTIFACTS / "connect-flow-enrollio.png"
            assert driver.save_screenshot(str(screenshot))
            final_url = driver.current_url
            cookies = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
        finally:
            driver.quit()
        with capsys.disabled():
            print(f"\n  screenshot of the final Enrollio page: {screenshot}")

        assert final_url.startswith(enrollio_site.return_url + "?outcome=connected"), final_url
        assert "Outlook connected: browser." in text
        [outcome] = [v for v in enrollio_site.visits if v.get("address", "").startswith("browser.")]
        connections = stack.enrollio.call("GET", "/api/users/user-browser/connections").json()["connections"]
        assert [(c["address"], c["status"], c["connection_id"]) for c in connections] == [
            (outcome["address"], "active", outcome["connection_id"])
        ]
        assert screenshot.stat().st_size > 1000
        # As the browser stored it: sent on the cross-site form_post however long the sign-in takes (not only within
        # Chromium's two-minute Lax allowance), over HTTPS only, out of scripts' reach, to the callback only.
        assert [
            (c["domain"], c.get("sameSite"), c["secure"], c["httpOnly"], c["path"])
            for c in cookies
            if c["name"] == BROWSER_COOKIE
        ] == [("localhost", "None", True, True, f"/api/{CALLBACK_ROUTE}")]


def test_over_plain_http_the_browser_drops_the_cookie_and_the_callback_refuses(
    azurite: Azurite, enrollio_site: EnrollioSite, tmp_path: Path
) -> None:
    """Why the local host serves HTTPS: a SameSite=None cookie without Secure never comes back to the callback."""
    allowed = f"https://{ENROLLIO_HOST}:{enrollio_site.port}/"
    with offline_stack(azurite, tmp_path / "stack", ENROLLIO_RETURN_URLS=allowed) as stack:
        driver, text = connect_in_browser(stack, enrollio_site, tmp_path / "profile", "user-plain-http")
        driver.quit()
        # The page names the missing cookie as the field at fault (every 4xx names its field).
        assert f"Finish connecting Outlook in the browser where you started it (field: cookie {BROWSER_COOKIE})" in text
        assert stack.enrollio.call("GET", "/api/users/user-plain-http/connections").json()["connections"] == []
