"""The emulator's identity platform, driven by the real MSAL over HTTPS (CONTRACT.md section 9).

The "browser" is ``requests`` following ``auth_uri`` without following the final redirect to the app: the
redirect's query (or the form_post page's fields) is what the app's callback would receive.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msal
import pytest
import requests

from devtools.emulator import EmulatorServer, Mailbox
from devtools.emulator.identity import pkce_s256
from devtools.stack import https_session

CLIENT_ID = "enrollio-sync-tests"
SECRET = "test-client-secret"
REDIRECT = "http://127.0.0.1:7071/api/auth/callback"
OTHER_REDIRECT = "http://127.0.0.1:7071/api/auth/other"
SCOPES = ["Mail.ReadWrite", "Mail.Read", "Mail.Send", "User.Read"]
# MSAL nudges towards form_post on every query-mode flow; both modes are tested here on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The emulator with the test app registered through the control endpoint."""
    session = https_session(emulator.ca_path)
    answer = session.post(
        f"{emulator.base_url}/_emulator/apps",
        json={"client_id": CLIENT_ID, "client_secret": SECRET, "redirect_uris": [REDIRECT, OTHER_REDIRECT]},
    )
    assert answer.status_code == 201, answer.text
    yield emulator


@pytest.fixture
def teacher(emu: EmulatorServer) -> Mailbox:
    return emu.world.add_mailbox("teacher@school.example", "Tess Teacher")


def msal_app(emu: EmulatorServer, secret: str = SECRET) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=secret,
        authority=emu.authority,
        instance_discovery=False,
        http_client=https_session(emu.ca_path),
    )


def browse(emu: EmulatorServer, auth_uri: str) -> dict[str, str]:
    """Follow ``auth_uri`` like a browser; the query the emulator redirects back to the app with."""
    answer = https_session(emu.ca_path).get(auth_uri, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?") or location.startswith(OTHER_REDIRECT + "?"), location
    return dict(parse_qsl(urlsplit(location).query))


def sign_in(emu: EmulatorServer, app: msal.ConfidentialClientApplication, mailbox: Mailbox) -> dict[str, Any]:
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=mailbox.address)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, browse(emu, flow["auth_uri"]))
    assert "access_token" in result, result
    return result


def me(emu: EmulatorServer, token: str) -> requests.Response:
    return https_session(emu.ca_path).get(f"{emu.graph_base_url}/me", headers={"Authorization": f"Bearer {token}"})


def redeem(emu: EmulatorServer, **form: str) -> requests.Response:
    """A raw token request, as MSAL would send it (client secret in the body)."""
    body = {"client_id": CLIENT_ID, "client_secret": SECRET, **form}
    return https_session(emu.ca_path).post(f"{emu.authority}/oauth2/v2.0/token", data=body)


def test_msal_auth_code_flow_gives_a_token_that_works_on_graph(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    response = browse(emu, flow["auth_uri"])
    assert response["state"] == flow["state"]

    result = app.acquire_token_by_auth_code_flow(flow, response)

    assert result.get("token_type") == "Bearer", result
    assert "refresh_token" in result  # MSAL added offline_access
    answer = me(emu, result["access_token"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == teacher.id
    claims = result["id_token_claims"]
    # The nonce MSAL sent is sha256-hex of the flow's nonce; the id_token must echo it (CONTRACT.md 9).
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert claims["aud"] == CLIENT_ID
    assert (claims["oid"], claims["tid"], claims["preferred_username"]) == (
        teacher.id,
        emu.world.tenant_id,
        teacher.address,
    )
    assert claims["iss"] == f"{emu.base_url}/{emu.world.tenant_id}/v2.0"
    # client_info gives MSAL the stable "{uid}.{utid}" account id.
    assert [a["home_account_id"] for a in app.get_accounts()] == [f"{teacher.id}.{emu.world.tenant_id}"]


def test_graph_rejects_missing_and_unknown_bearer_tokens(emu: EmulatorServer, teacher: Mailbox) -> None:
    session = https_session(emu.ca_path)
    assert session.get(f"{emu.graph_base_url}/me").status_code == 401
    assert me(emu, "not-a-token").status_code == 401
    assert me(emu, emu.identity.issue_token_for_tests(teacher.id)).status_code == 200


def test_silent_refresh_rotates_the_refresh_token_and_revocation_ends_the_grant(
    emu: EmulatorServer, teacher: Mailbox
) -> None:
    session = https_session(emu.ca_path)
    # Under MSAL's 5-minute margin, so acquire_token_silent treats a fresh token as expiring and refreshes.
    config = session.post(f"{emu.base_url}/_emulator/identity/config", json={"access_token_lifetime": 120})
    assert config.status_code == 200, config.text
    app = msal_app(emu)
    first = sign_in(emu, app, teacher)
    assert first["expires_in"] == 120
    expired = session.post(f"{emu.base_url}/_emulator/identity/expire-access-tokens", json={"mailbox": teacher.id})
    assert expired.json() == {"expired": 1}
    assert me(emu, first["access_token"]).status_code == 401

    [account] = app.get_accounts()
    second = app.acquire_token_silent(SCOPES, account)

    assert second is not None and second["access_token"] != first["access_token"]
    assert me(emu, second["access_token"]).status_code == 200
    reused = redeem(emu, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"

    revoked = session.post(f"{emu.base_url}/_emulator/identity/revoke", json={"mailbox": teacher.address})
    assert revoked.status_code == 200, revoked.text
    assert me(emu, second["access_token"]).status_code == 401
    failed = app.acquire_token_silent_with_error(SCOPES, account)
    assert failed is not None
    assert failed["error"] == "invalid_grant"
    assert failed["error_description"].startswith("AADSTS70000")


def test_consent_denied_comes_back_as_access_denied(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    queued = https_session(emu.ca_path).post(
        f"{emu.base_url}/_emulator/identity/consent", json={"mailbox": teacher.address, "decision": "deny"}
    )
    assert queued.status_code == 202, queued.text
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)

    response = browse(emu, flow["auth_uri"])

    assert response["error"] == "access_denied"
    assert response["state"] == flow["state"]
    assert "AADSTS65004" in response["error_description"]
    assert app.acquire_token_by_auth_code_flow(flow, response)["error"] == "access_denied"
    # The denial was used up: the next sign-in consents; a query flag denies it again.
    assert "code" in browse(emu, app.initiate_auth_code_flow(SCOPES, REDIRECT, login_hint=teacher.address)["auth_uri"])
    again = app.initiate_auth_code_flow(SCOPES, REDIRECT, login_hint=teacher.address)
    assert browse(emu, again["auth_uri"] + "&emulator_consent=deny")["error"] == "access_denied"


def test_sign_in_without_login_hint_takes_the_queued_mailbox(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, prompt="select_account")
    nobody = browse(emu, flow["auth_uri"])
    assert nobody["error"] == "login_required" and "login_hint" in nobody["error_description"]

    emu.identity.queue_consent(teacher.address)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, prompt="select_account")
    result = app.acquire_token_by_auth_code_flow(flow, browse(emu, flow["auth_uri"]))

    assert result["id_token_claims"]["oid"] == teacher.id


def test_unknown_login_hint_is_an_error_redirect(emu: EmulatorServer, teacher: Mailbox) -> None:
    flow = msal_app(emu).initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint="stranger@else.example")
    response = browse(emu, flow["auth_uri"])
    assert response["error"] == "invalid_request"
    assert "AADSTS50034" in response["error_description"] and "login_hint" in response["error_description"]


def test_form_post_response_mode_posts_code_and_state(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    flow = app.initiate_auth_code_flow(SCOPES, REDIRECT, login_hint=teacher.address, response_mode="form_post")
    page = https_session(emu.ca_path).get(flow["auth_uri"], allow_redirects=False)
    assert page.status_code == 200
    assert f'action="{REDIRECT}"' in page.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    assert set(fields) == {"code", "state"}

    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, fields)


def test_code_is_single_use(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    response = browse(emu, flow["auth_uri"])
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)

    replay = redeem(
        emu,
        grant_type="authorization_code",
        code=response["code"],
        redirect_uri=REDIRECT,
        code_verifier=flow["code_verifier"],
    )

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert replay.json()["error_description"].startswith("AADSTS54005")


def test_wrong_pkce_verifier_is_invalid_grant(emu: EmulatorServer, teacher: Mailbox) -> None:
    flow = msal_app(emu).initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    response = browse(emu, flow["auth_uri"])
    wrong = "x" * 43
    assert pkce_s256(wrong) != pkce_s256(flow["code_verifier"])

    answer = redeem(
        emu, grant_type="authorization_code", code=response["code"], redirect_uri=REDIRECT, code_verifier=wrong
    )

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert "code_verifier" in answer.json()["error_description"]


def test_redirect_uri_must_be_registered_and_match_at_redemption(emu: EmulatorServer, teacher: Mailbox) -> None:
    app = msal_app(emu)
    stranger = app.initiate_auth_code_flow(SCOPES, redirect_uri="https://evil.example/cb", login_hint=teacher.address)
    page = https_session(emu.ca_path).get(stranger["auth_uri"], allow_redirects=False)
    # RFC 6749 4.1.2.1: never redirect to an unregistered URI; show the error instead.
    assert page.status_code == 400 and "Location" not in page.headers
    assert "AADSTS50011" in page.text

    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    response = browse(emu, flow["auth_uri"])
    answer = redeem(
        emu,
        grant_type="authorization_code",
        code=response["code"],
        redirect_uri=OTHER_REDIRECT,
        code_verifier=flow["code_verifier"],
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant" and "redirect_uri" in answer.json()["error_description"]


def test_unknown_client_and_wrong_secret_are_refused(emu: EmulatorServer, teacher: Mailbox) -> None:
    unknown = msal.ConfidentialClientApplication(
        "not-registered",
        client_credential="x",
        authority=emu.authority,
        instance_discovery=False,
        http_client=https_session(emu.ca_path),
    )
    flow = unknown.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    page = https_session(emu.ca_path).get(flow["auth_uri"], allow_redirects=False)
    assert page.status_code == 400 and "AADSTS700016" in page.text

    app = msal_app(emu, secret="wrong-secret")
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT, login_hint=teacher.address)
    result = app.acquire_token_by_auth_code_flow(flow, browse(emu, flow["auth_uri"]))
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215")


def test_discovery_serves_tenant_and_aliases_but_not_strangers(emu: EmulatorServer) -> None:
    session = https_session(emu.ca_path)
    for tenant in (emu.world.tenant_id, "common", "organizations"):
        doc = session.get(f"{emu.base_url}/{tenant}/v2.0/.well-known/openid-configuration").json()
        assert doc["token_endpoint"] == f"{emu.base_url}/{tenant}/oauth2/v2.0/token"
        assert doc["issuer"] == f"{emu.base_url}/{emu.world.tenant_id}/v2.0"
    stranger = session.get(f"{emu.base_url}/some-other-tenant/v2.0/.well-known/openid-configuration")
    assert stranger.status_code == 400 and "AADSTS90002" in stranger.text


def test_control_endpoints_name_the_bad_field(emu: EmulatorServer) -> None:
    session = https_session(emu.ca_path)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/_emulator/apps", {"client_secret": "s", "redirect_uris": [REDIRECT]}, "client_id"),
        ("/_emulator/apps", {"client_id": "c", "client_secret": "s", "redirect_uris": ["not a url"]}, "redirect_uris"),
        ("/_emulator/identity/revoke", {"mailbox": "nobody@nowhere.example"}, "mailbox"),
        ("/_emulator/identity/consent", {"mailbox": "nobody@nowhere.example"}, "mailbox"),
        ("/_emulator/identity/config", {"access_token_lifetime": "soon"}, "access_token_lifetime"),
    ]
    for path, body, field in cases:
        answer = session.post(f"{emu.base_url}{path}", data=json.dumps(body))
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["message"].startswith(f"{field}:"), (path, answer.text)
