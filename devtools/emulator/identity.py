"""The identity platform half of the emulator: OIDC discovery, /authorize (consent), /token, bearer tokens.

Faithful to what MSAL relies on (CONTRACT.md section 9): discovery at ``{authority}/v2.0/.well-known/
openid-configuration``, PKCE S256, an id_token whose ``nonce`` echoes the authorize request and whose ``aud`` is
the client id, ``client_info`` for stable account ids, refresh tokens only with ``offline_access``. Stricter than
Entra on purpose: ``state`` and PKCE are required, refresh tokens rotate (a used one is dead), so a client that
keeps an old refresh token fails here first. Tokens are opaque random strings; the id_token is unsigned
(``alg: none``), which MSAL accepts because it does not verify id_token signatures over TLS.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from devtools.emulator.state import Mailbox
from devtools.emulator.web import ROUTE_KEY, Host, Principal, graph_error, json_response

TENANT_ALIASES = frozenset({"common", "organizations"})
# Delegated Graph permissions the emulator knows (canonical casing), plus the OIDC scopes MSAL adds itself.
GRAPH_SCOPES = ("Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite", "Mail.Send", "User.Read")
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
GRAPH_SCOPE_PREFIX = "https://graph.microsoft.com/"
DEFAULT_TEST_SCOPES = frozenset({"Mail.ReadWrite", "Mail.Read", "Mail.Send", "User.Read"})
CODE_LIFETIME_SECONDS = 600  # Entra's authorization codes live about 10 minutes


class OAuthError(Exception):
    """An OAuth 2.0 error answer (RFC 6749 section 5.2), with Entra's AADSTS-prefixed description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class ControlError(ValueError):
    """A bad control request; the message names the field."""


@dataclass(frozen=True)
class RegisteredApp:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass
class Grant:
    """One consent: what a mailbox granted an app. Revoking it kills its access and refresh tokens."""

    mailbox_id: str
    client_id: str
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float


@dataclass
class RefreshToken:
    grant: Grant
    used: bool = False


@dataclass
class AuthCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass
class _Consent:
    """A queued answer for the next sign-in (of one mailbox, or of whoever signs in without a login_hint)."""

    mailbox_id: str
    approve: bool


@dataclass
class _Store:
    apps: dict[str, RegisteredApp] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    consents: list[_Consent] = field(default_factory=list)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_s256(verifier: str) -> str:
    """The S256 code challenge for a verifier (RFC 7636 section 4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class IdentityProvider:
    """Entra ID as MSAL sees it, for the world's one tenant (and its ``common``/``organizations`` aliases)."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self.world = server.world
        self.access_token_lifetime = 3600  # seconds; tests shorten it to make MSAL refresh
        self._lock = threading.Lock()
        self._store = _Store()

    # -- Python API for tests and the other components ------------------------------------------------
    def register_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> RegisteredApp:
        """Register (or replace) an app registration: its secret and the redirect URIs it may use."""
        if not client_id:
            raise ControlError("client_id: required, a non-empty string")
        if not client_secret:
            raise ControlError("client_secret: required, a non-empty string")
        if not redirect_uris:
            raise ControlError("redirect_uris: required, a non-empty list of absolute URLs")
        for uri in redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ControlError(f"redirect_uris: {uri!r} is not an absolute http(s) URL")
        app = RegisteredApp(client_id, client_secret, tuple(redirect_uris))
        with self._lock:
            self._store.apps[client_id] = app
        return app

    def issue_token_for_tests(
        self, mailbox_id: str, client_id: str = "test-client", scopes: frozenset[str] = DEFAULT_TEST_SCOPES
    ) -> str:
        """Test convenience: an access token for a mailbox without the browser dance (no app registration needed)."""
        mailbox = self._mailbox(mailbox_id, "mailbox")
        return self._new_access_token(self._new_grant(mailbox.id, client_id, frozenset(scopes)))

    def queue_consent(self, mailbox: str, approve: bool = True) -> None:
        """Decide the next sign-in of ``mailbox``; a sign-in without ``login_hint`` takes the oldest queued one."""
        found = self._mailbox(mailbox, "mailbox")
        with self._lock:
            self._store.consents.append(_Consent(found.id, approve))

    def revoke(self, mailbox_id: str) -> int:
        """Revoke every grant of a mailbox (its refresh and access tokens stop working); returns how many."""
        mailbox = self._mailbox(mailbox_id, "mailbox")
        with self._lock:
            revoked = [g for g in self._store.grants if g.mailbox_id == mailbox.id and not g.revoked]
            for grant in revoked:
                grant.revoked = True
        if revoked:
            # CONTRACT.md 3.2: an admin revoking permissions is a documented trigger of reauthorizationRequired.
            self.server.subscriptions.grant_revoked(mailbox.id)
        return len(revoked)

    def expire_access_tokens(self, mailbox_id: str | None = None) -> int:
        """Make live access tokens (of one mailbox, or all) expire now, as if their hour had passed."""
        mailbox = self._mailbox(mailbox_id, "mailbox") if mailbox_id else None
        now = time.time()
        with self._lock:
            live = [
                t
                for t in self._store.access.values()
                if t.expires_at > now and (mailbox is None or t.grant.mailbox_id == mailbox.id)
            ]
            for token in live:
                token.expires_at = now
        return len(live)

    def authenticate(self, request: Request) -> Principal | None:
        """The principal of a Graph request's ``Authorization: Bearer``; None if missing, unknown, expired, revoked."""
        token = self._live_access_token(request)
        return Principal(token.grant.mailbox_id, token.grant.client_id) if token else None

    def scopes(self, request: Request) -> frozenset[str]:
        """The delegated scopes granted to the request's bearer token (empty if it has none that is valid)."""
        token = self._live_access_token(request)
        return token.grant.scopes if token else frozenset()

    # -- HTTP: identity platform ----------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response | None:
        """Answer identity-platform paths (``/{tenant}/v2.0/.well-known/...``, ``/{tenant}/oauth2/v2.0/...``)."""
        tenant, _, rest = request.path.lstrip("/").partition("/")
        routes = {
            ("GET", "v2.0/.well-known/openid-configuration"): self._discovery,
            ("GET", ".well-known/openid-configuration"): self._discovery,  # MSAL's oidc_authority= path
            ("GET", "discovery/v2.0/keys"): self._keys,
            ("GET", "oauth2/v2.0/authorize"): self._authorize,
            ("POST", "oauth2/v2.0/token"): self._token,
        }
        handler = routes.get((request.method, rest))
        if handler is None:
            return None
        request.environ[ROUTE_KEY] = f"{request.method} /{{tenant}}/{rest}"
        if tenant != self.world.tenant_id and tenant not in TENANT_ALIASES:
            # Entra answers discovery for an unknown tenant with 400 (MSAL turns it into ValueError).
            return self._oauth_error(OAuthError("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found."))
        return handler(request, tenant)

    def _discovery(self, request: Request, tenant: str) -> Response:
        base = f"{self.server.base_url}/{tenant}"
        return json_response(
            {
                "issuer": self._issuer(),
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["none"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    def _keys(self, request: Request, tenant: str) -> Response:
        return json_response({"keys": []})  # id_tokens are unsigned: there is no key to publish

    def _authorize(self, request: Request, tenant: str) -> Response:
        args = request.args
        client_id = args.get("client_id", "")
        redirect_uri = args.get("redirect_uri", "")
        # RFC 6749 4.1.2.1: with a bad client or redirect URI the server must not redirect; it shows an error page.
        with self._lock:
            app = self._store.apps.get(client_id)
        if app is None:
            return _error_page(
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory. (client_id; register it with POST /_emulator/apps)"
            )
        if redirect_uri not in app.redirect_uris:
            return _error_page(
                f"AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not "
                f"match the redirect URIs configured for the application '{client_id}'. (redirect_uri)"
            )
        state = args.get("state")
        mode = args.get("response_mode", "query")
        try:
            if mode not in ("query", "form_post"):
                mode = "query"
                raise OAuthError("invalid_request", "response_mode: the emulator supports 'query' and 'form_post'.")
            code = self._consent(args, app)
        except OAuthError as err:
            return _redirect(
                redirect_uri, mode, {"error": err.error, "error_description": err.description, "state": state}
            )
        return _redirect(redirect_uri, mode, {"code": code, "state": state})

    def _consent(self, args: Any, app: RegisteredApp) -> str:
        """Validate an authorize request and, if the user consents, mint a single-use code."""
        if args.get("response_type") != "code":
            raise OAuthError(
                "unsupported_response_type",
                f"AADSTS70005: response_type '{args.get('response_type')}' is not enabled; use 'code'.",
            )
        if not args.get("state"):
            raise OAuthError("invalid_request", "state: required by the emulator (CSRF protection).")
        scopes = _parse_scopes(args.get("scope", ""))
        if "openid" in scopes and not args.get("nonce"):
            raise OAuthError("invalid_request", "nonce: required with the openid scope.")
        challenge = args.get("code_challenge", "")
        if not challenge or args.get("code_challenge_method") != "S256":
            raise OAuthError(
                "invalid_request",
                "AADSTS9002325: Proof Key for Code Exchange is required (code_challenge with "
                "code_challenge_method=S256).",
            )
        mailbox = self._signing_in(args.get("login_hint"))
        if not self._take_consent(mailbox.id) or args.get("emulator_consent") == "deny":
            raise OAuthError("access_denied", "AADSTS65004: User declined to consent to access the app.")
        code = secrets.token_urlsafe(32)
        grant = self._new_grant(mailbox.id, app.client_id, scopes)
        with self._lock:
            self._store.codes[code] = AuthCode(
                grant=grant,
                redirect_uri=args["redirect_uri"],
                code_challenge=challenge,
                nonce=args.get("nonce"),
                expires_at=time.time() + CODE_LIFETIME_SECONDS,
            )
        return code

    def _signing_in(self, login_hint: str | None) -> Mailbox:
        """Who signs in: the ``login_hint`` mailbox, else whoever the oldest queued consent names."""
        if login_hint:
            mailbox = self.world.mailbox(login_hint)
            if mailbox is None:
                raise OAuthError(
                    "invalid_request",
                    f"AADSTS50034: The user account {login_hint} does not exist in "
                    f"the {self.world.tenant_id} directory. (login_hint)",
                )
            return mailbox
        with self._lock:
            queued = self._store.consents[0] if self._store.consents else None
        if queued is None:
            raise OAuthError(
                "login_required",
                'login_hint: missing, and no sign-in is queued (POST /_emulator/identity/consent {"mailbox": ...}).',
            )
        return self._mailbox(queued.mailbox_id, "mailbox")

    def _take_consent(self, mailbox_id: str) -> bool:
        """The oldest queued decision for this mailbox (used up), else the user consents."""
        with self._lock:
            for index, consent in enumerate(self._store.consents):
                if consent.mailbox_id == mailbox_id:
                    del self._store.consents[index]
                    return consent.approve
        return True

    def _token(self, request: Request, tenant: str) -> Response:
        try:
            app = self._client(request)
            grant_type = request.form.get("grant_type", "")
            if grant_type == "authorization_code":
                grant, nonce = self._redeem_code(request.form, app)
            elif grant_type == "refresh_token":
                grant, nonce = self._redeem_refresh_token(request.form, app), None
            else:
                raise OAuthError(
                    "unsupported_grant_type",
                    f"AADSTS70003: The app requested an unsupported grant type '{grant_type}'.",
                )
        except OAuthError as err:
            return self._oauth_error(err)
        return json_response(self._token_response(grant, nonce), headers={"Cache-Control": "no-store"})

    def _client(self, request: Request) -> RegisteredApp:
        """The calling app, authenticated by ``client_secret`` (HTTP Basic, as MSAL sends it, or in the body)."""
        client_id, secret = request.form.get("client_id", ""), request.form.get("client_secret", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
            try:
                basic_id, _, basic_secret = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except ValueError:
                raise OAuthError("invalid_client", "Authorization: malformed Basic credentials.", 401) from None
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        with self._lock:
            app = self._store.apps.get(client_id)
        if app is None:
            raise OAuthError(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory. (client_id)",
                status=400,
            )
        if not secrets.compare_digest(secret.encode(), app.client_secret.encode()):
            raise OAuthError(
                "invalid_client", "AADSTS7000215: Invalid client secret provided. (client_secret)", status=401
            )
        return app

    def _redeem_code(self, form: Any, app: RegisteredApp) -> tuple[Grant, str | None]:
        for name in ("code", "redirect_uri", "code_verifier"):
            if not form.get(name):
                raise OAuthError(
                    "invalid_request", f"AADSTS900144: The request body must contain the following parameter: '{name}'."
                )
        with self._lock:
            code = self._store.codes.get(form["code"])
            if code is None or code.grant.client_id != app.client_id:
                raise OAuthError("invalid_grant", "AADSTS70000: The provided authorization code is invalid. (code)")
            if code.redeemed:
                raise OAuthError(
                    "invalid_grant",
                    "AADSTS54005: OAuth2 Authorization code was already redeemed, "
                    "please retry with a new valid code or use an existing refresh "
                    "token. (code)",
                )
            code.redeemed = True
        if code.expires_at < time.time():
            raise OAuthError(
                "invalid_grant",
                "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. (code)",
            )
        if form["redirect_uri"] != code.redirect_uri:
            raise OAuthError(
                "invalid_grant",
                "AADSTS50011: redirect_uri does not match the redirect_uri of the "
                "authorization request. (redirect_uri)",
            )
        if not secrets.compare_digest(pkce_s256(form["code_verifier"]), code.code_challenge):
            raise OAuthError(
                "invalid_grant",
                "AADSTS50148: The code_verifier does not match the code_challenge "
                "supplied in the authorization request for PKCE. (code_verifier)",
            )
        return code.grant, code.nonce

    def _redeem_refresh_token(self, form: Any, app: RegisteredApp) -> Grant:
        value = form.get("refresh_token", "")
        with self._lock:
            token = self._store.refresh.get(value)
            if token is None or token.grant.client_id != app.client_id:
                raise OAuthError("invalid_grant", "AADSTS70000: The provided refresh token is invalid. (refresh_token)")
            if token.grant.revoked:
                raise OAuthError(
                    "invalid_grant",
                    "AADSTS70000: The provided grant has been revoked; the user must sign in again. (refresh_token)",
                )
            if token.used:
                raise OAuthError(
                    "invalid_grant",
                    "AADSTS70000: The refresh token was already used; refresh tokens "
                    "rotate, use the newest one. (refresh_token)",
                )
            token.used = True
        asked = _parse_scopes(form.get("scope", "")) if form.get("scope") else token.grant.scopes
        if extra := asked - token.grant.scopes:
            raise OAuthError(
                "invalid_grant",
                f"AADSTS65001: The user or administrator has not consented to use "
                f"the application with scopes {sorted(extra)}. (scope)",
            )
        return token.grant

    def _token_response(self, grant: Grant, nonce: str | None) -> dict[str, Any]:
        mailbox = self._mailbox(grant.mailbox_id, "mailbox")
        response: dict[str, Any] = {
            "token_type": "Bearer",
            # Like Entra: the granted scopes, without offline_access (it only decides whether an RT comes back).
            "scope": " ".join(sorted(grant.scopes - {"offline_access"})),
            "expires_in": self.access_token_lifetime,
            "ext_expires_in": self.access_token_lifetime,
            "access_token": self._new_access_token(grant),
            "client_info": b64url(json.dumps({"uid": mailbox.id, "utid": mailbox.tenant_id}).encode()),
        }
        if "offline_access" in grant.scopes:
            refresh = secrets.token_urlsafe(48)
            with self._lock:
                self._store.refresh[refresh] = RefreshToken(grant)
            response["refresh_token"] = refresh
        if "openid" in grant.scopes:
            response["id_token"] = self._id_token(mailbox, grant.client_id, nonce)
        return response

    def _id_token(self, mailbox: Mailbox, client_id: str, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": self._issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": mailbox.display_name,
            "oid": mailbox.id,
            "preferred_username": mailbox.address,
            # Entra's sub is pairwise: stable per user *and* app.
            "sub": b64url(hashlib.sha256(f"{mailbox.id}:{client_id}".encode()).digest()),
            "tid": mailbox.tenant_id,
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{b64url(json.dumps(claims).encode())}."

    # -- HTTP: control endpoints ----------------------------------------------------------------------
    def control(self, request: Request) -> Response | None:
        """``POST /_emulator/apps`` and ``POST /_emulator/identity/{name}`` for consent, revoke, expire-access-tokens,
        token and config; each is the HTTP twin of the Python method of the same purpose."""
        handlers = {
            "/_emulator/apps": self._control_register,
            "/_emulator/identity/consent": self._control_consent,
            "/_emulator/identity/revoke": self._control_revoke,
            "/_emulator/identity/expire-access-tokens": self._control_expire,
            "/_emulator/identity/token": self._control_token,
            "/_emulator/identity/config": self._control_config,
        }
        handler = handlers.get(request.path)
        if handler is None:
            return None
        if request.method != "POST":
            return graph_error(405, "methodNotAllowed", f"{request.path} accepts POST only")
        request.environ[ROUTE_KEY] = f"POST {request.path}"
        try:
            return handler(_json_object(request))
        except ControlError as err:
            return graph_error(400, "badRequest", str(err))

    def _control_register(self, body: dict[str, Any]) -> Response:
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise ControlError("redirect_uris: required, a list of URL strings")
        app = self.register_app(_str(body, "client_id"), _str(body, "client_secret"), uris)
        return json_response({"client_id": app.client_id, "redirect_uris": list(app.redirect_uris)}, status=201)

    def _control_consent(self, body: dict[str, Any]) -> Response:
        decision = body.get("decision", "approve")
        if decision not in ("approve", "deny"):
            raise ControlError("decision: must be 'approve' or 'deny'")
        self.queue_consent(_str(body, "mailbox"), approve=decision == "approve")
        return json_response({"queued": decision}, status=202)

    def _control_revoke(self, body: dict[str, Any]) -> Response:
        return json_response({"revoked_grants": self.revoke(_str(body, "mailbox"))})

    def _control_expire(self, body: dict[str, Any]) -> Response:
        mailbox = body.get("mailbox")
        if mailbox is not None and not isinstance(mailbox, str):
            raise ControlError("mailbox: must be a mailbox id or address")
        return json_response({"expired": self.expire_access_tokens(mailbox)})

    def _control_token(self, body: dict[str, Any]) -> Response:
        client_id = body.get("client_id", "test-client")
        if not isinstance(client_id, str) or not client_id:
            raise ControlError("client_id: must be a non-empty string")
        token = self.issue_token_for_tests(_str(body, "mailbox"), client_id)
        return json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.access_token_lifetime})

    def _control_config(self, body: dict[str, Any]) -> Response:
        lifetime = body.get("access_token_lifetime")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise ControlError("access_token_lifetime: required, a positive integer (seconds)")
        self.access_token_lifetime = lifetime
        return json_response({"access_token_lifetime": lifetime})

    # -- helpers --------------------------------------------------------------------------------------
    def _issuer(self) -> str:
        return f"{self.server.base_url}/{self.world.tenant_id}/v2.0"

    def _mailbox(self, id_or_address: str, name: str) -> Mailbox:
        mailbox = self.world.mailbox(id_or_address)
        if mailbox is None:
            raise ControlError(f"{name}: no mailbox {id_or_address!r} in this world")
        return mailbox

    def _new_grant(self, mailbox_id: str, client_id: str, scopes: frozenset[str]) -> Grant:
        grant = Grant(mailbox_id, client_id, scopes)
        with self._lock:
            self._store.grants.append(grant)
        return grant

    def _new_access_token(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._store.access[token] = AccessToken(grant, time.time() + self.access_token_lifetime)
        return token

    def _live_access_token(self, request: Request) -> AccessToken | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        with self._lock:
            token = self._store.access.get(value.strip())
        if token is None or token.grant.revoked or token.expires_at <= time.time():
            return None
        return token

    @staticmethod
    def _oauth_error(err: OAuthError) -> Response:
        body = {"error": err.error, "error_description": err.description, "error_codes": _aadsts(err.description)}
        return json_response(body, status=err.status, headers={"Cache-Control": "no-store"})


def _parse_scopes(raw: str) -> frozenset[str]:
    """Space-separated scopes, Graph's resource prefix stripped, canonical casing; unknown ones are an error."""
    known = {s.lower(): s for s in (*GRAPH_SCOPES, *OIDC_SCOPES)}
    scopes = set()
    for scope in raw.split():
        name = scope[len(GRAPH_SCOPE_PREFIX) :] if scope.lower().startswith(GRAPH_SCOPE_PREFIX) else scope
        if name.lower() not in known:
            raise OAuthError(
                "invalid_scope",
                f"AADSTS70011: The provided value for the input parameter 'scope' "
                f"is not valid. The scope {scope} is not known to the emulator.",
            )
        scopes.add(known[name.lower()])
    if not scopes:
        raise OAuthError(
            "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'."
        )
    return frozenset(scopes)


def _aadsts(description: str) -> list[int]:
    head = description.split(":", 1)[0]
    return [int(head[6:])] if head.startswith("AADSTS") and head[6:].isdigit() else []


def _redirect(redirect_uri: str, mode: str, params: dict[str, str | None]) -> Response:
    values = {k: v for k, v in params.items() if v is not None}
    if mode == "form_post":
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>' for k, v in values.items()
        )
        page = (
            f'<html><body onload="document.forms[0].submit()"><form method="POST" '
            f'action="{html.escape(redirect_uri)}">{inputs}</form></body></html>'
        )
        return Response(page, status=200, mimetype="text/html")
    separator = "&" if "?" in redirect_uri else "?"
    return Response(status=302, headers={"Location": f"{redirect_uri}{separator}{urlencode(values)}"})


def _error_page(message: str) -> Response:
    page = f"<html><body><h1>Sign in failed</h1><p>{html.escape(message)}</p></body></html>"
    return Response(page, status=400, mimetype="text/html")


def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(as_text=True) or "{}")
    except ValueError as err:
        raise ControlError(f"body: not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise ControlError("body: must be a JSON object")
    return body


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError(f"{name}: required, a non-empty string")
    return value
