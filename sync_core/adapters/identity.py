"""MSAL (delegated auth-code flow with PKCE) and per-connection token caches.

CONTRACT.md section 9: MSAL adds ``openid profile offline_access`` itself (passing them raises), PKCE and the
nonce are automatic, ``acquire_token_by_auth_code_flow`` raises ``ValueError`` on a state mismatch, and
``acquire_token_silent_with_error`` refreshes an access token with under 5 minutes left. Refresh tokens rotate, and
each refresh rewrites the connection's cache: a refresh happens under the cache blob's lease (``refresh_lock``), one
per connection at a time in every instance (a process-local lock in front of it), and whoever waited for it reads
the cache again and uses the token the refresh left there instead of refreshing a second time. Subscriptions need
``Mail.Read`` explicitly, not only ``Mail.ReadWrite`` (section 1.2). A non-Microsoft authority (the emulator)
must skip instance discovery, and with a private CA MSAL needs a session that ignores ``REQUESTS_CA_BUNDLE``
(docs/offline-toolchain.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from azure.core.exceptions import ResourceNotFoundError

from sync_core.adapters.graph import GraphUnavailable, TokenUnavailable
from sync_core.adapters.secrets_store import RefreshBusy, TokenCacheStore
from sync_core.keyring import KeyringError
from sync_core.settings import Settings

SCOPES = ("Mail.ReadWrite", "Mail.Read", "Mail.Send", "User.Read")
# MSAL's answers that mean the user must sign in again; anything else is transient.
GRANT_LOST = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
REFRESH_MARGIN_SECONDS = 300  # MSAL treats a token with under 5 minutes left as expired (CONTRACT.md s.9)
# MSAL's requests (discovery, token redemption and refresh) give up after this: a refresh runs under the token
# cache's lease (``secrets_store.REFRESH_LEASE_SECONDS``), and one that hung past it would lose its rotated token.
IDENTITY_TIMEOUT_SECONDS = 10.0
MICROSOFT_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn")


def http_session(ca_bundle: str | None) -> requests.Session:
    """A session for Microsoft endpoints; with a private CA (the emulator) trust exactly that file."""
    session = requests.Session()
    if ca_bundle:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify=
        session.verify = ca_bundle
    return session


class SignInFailed(Exception):
    """The auth-code flow did not produce tokens; ``reason`` is a short code for the return URL."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class IdentityUnreachable(Exception):
    """The identity platform did not answer (MSAL fetches its OpenID configuration before the first flow): a
    moment later it may."""


class Identity:
    """Builds MSAL apps (one per token cache) sharing discovery through one ``http_cache``."""

    def __init__(
        self, settings: Settings, session: requests.Session, timeout: float = IDENTITY_TIMEOUT_SECONDS
    ) -> None:
        self._settings = settings
        self._session = session
        self._timeout = timeout
        self._http_cache: dict[Any, Any] = {}
        host = urlsplit(settings.graph_authority).hostname or ""
        self._instance_discovery = host in MICROSOFT_HOSTS

    def app(self, cache: msal.SerializableTokenCache | None = None) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self._settings.graph_client_id,
            client_credential=self._settings.graph_client_secret.get_secret_value(),
            authority=self._settings.graph_authority,
            token_cache=cache,
            http_client=self._session,
            http_cache=self._http_cache,
            instance_discovery=self._instance_discovery,
            timeout=self._timeout,
        )

    def start_flow(self, redirect_uri: str, login_hint: str | None = None) -> dict[str, Any]:
        """A new auth-code flow (PKCE, state, nonce); keep it server-side and send the user to ``auth_uri``.

        ``form_post``: the code comes back in a POST body, not in a URL that browser history and logs keep
        (MSAL's recommendation, RFC 9700 section 4.3.1).
        """
        try:
            flow: dict[str, Any] = self.app().initiate_auth_code_flow(
                list(SCOPES),
                redirect_uri=redirect_uri,
                login_hint=login_hint,
                prompt="select_account",
                response_mode="form_post",
            )
        except requests.RequestException as exc:  # refused, timed out, or a 5xx from the discovery endpoint
            raise IdentityUnreachable(str(exc)) from None
        return flow

    def finish_flow(
        self, flow: dict[str, Any], auth_response: Mapping[str, str]
    ) -> tuple[dict[str, Any], msal.SerializableTokenCache]:
        """Redeem the code; the token result and the (new) cache that now holds the refresh token."""
        cache = msal.SerializableTokenCache()
        try:
            result = self.app(cache).acquire_token_by_auth_code_flow(flow, dict(auth_response), scopes=list(SCOPES))
        except ValueError as exc:  # state mismatch or a malformed response: MSAL's CSRF guard
            raise SignInFailed("invalid_state", str(exc)) from None
        except requests.RequestException as exc:  # the identity platform did not answer: the user can retry
            raise SignInFailed("identity_unreachable", str(exc)) from None
        if "error" in result:
            raise SignInFailed(str(result["error"]), str(result.get("error_description", "")))
        return result, cache


_refresh_locks: dict[str, threading.Lock] = {}
_refresh_locks_guard = threading.Lock()


def _local_lock(connection_id: str) -> threading.Lock:
    """This process's refreshes of one connection queue here, in front of the shared lease (no storage polling)."""
    with _refresh_locks_guard:
        return _refresh_locks.setdefault(connection_id, threading.Lock())


def cached_access_token(cache: msal.SerializableTokenCache, account: dict[str, Any]) -> tuple[str, float] | None:
    """The cached access token MSAL itself would return without a refresh, and its seconds left: one for these
    scopes and this account with over 5 minutes left, not past its ``refresh_on`` (CONTRACT.md section 9)."""
    now = time.time()
    entries = cache.search(
        msal.TokenCache.CredentialType.ACCESS_TOKEN,
        target=list(SCOPES),
        query={"home_account_id": account.get("home_account_id")},
    )
    for entry in entries:
        left = int(entry["expires_on"]) - now
        if left >= REFRESH_MARGIN_SECONDS and ("refresh_on" not in entry or int(entry["refresh_on"]) >= now):
            return str(entry["secret"]), left
    return None


class ConnectionTokens:
    """Access tokens for one connection, through ``acquire_token_silent``; the cache is written back on change."""

    def __init__(self, identity: Identity, caches: TokenCacheStore, connection_id: str, home_account_id: str) -> None:
        self._identity = identity
        self._caches = caches
        self._connection_id = connection_id
        self._home_account_id = home_account_id
        self._token: str | None = None
        self._valid_until = 0.0

    def __call__(self, force_refresh: bool = False) -> str:
        # One invocation makes several Graph calls: reuse the token while MSAL itself would (over 5 min left).
        if self._token and time.monotonic() < self._valid_until and not force_refresh:
            return self._token
        self._token, lifetime = self._acquire(force_refresh)
        self._valid_until = time.monotonic() + max(0.0, lifetime - REFRESH_MARGIN_SECONDS)
        return self._token

    def _acquire(self, force_refresh: bool) -> tuple[str, float]:
        try:
            return self._acquire_or_raise(force_refresh)
        except KeyringError as exc:  # a cache no configured key opens is as good as no cache: sign in again
            raise TokenUnavailable(f"token cache unreadable: {exc}") from None
        except requests.RequestException as exc:  # the identity platform is out of reach: transient
            raise GraphUnavailable(0, "identityUnreachable", str(exc), retry_after=5.0) from None

    def _open(self) -> tuple[msal.SerializableTokenCache, msal.ConfidentialClientApplication, dict[str, Any]]:
        serialized = self._caches.load(self._connection_id)
        if serialized is None:
            raise TokenUnavailable("no token cache for this connection")
        cache = msal.SerializableTokenCache()
        cache.deserialize(serialized)
        app = self._identity.app(cache)
        account = next((a for a in app.get_accounts() if a.get("home_account_id") == self._home_account_id), None)
        if account is None:
            raise TokenUnavailable("the signed-in account is not in the token cache")
        return cache, app, account

    def _acquire_or_raise(self, force_refresh: bool) -> tuple[str, float]:
        cache, _, account = self._open()
        if not force_refresh and (cached := cached_access_token(cache, account)):
            return cached
        with _local_lock(self._connection_id):
            try:
                with self._caches.refresh_lock(self._connection_id) as lease:
                    # Whoever refreshed while this one waited left a fresh token: use it. After a 401, only a
                    # token other than the refused one will do.
                    cache, app, account = self._open()
                    cached = cached_access_token(cache, account)
                    if cached and not (force_refresh and cached[0] == self._token):
                        return cached
                    result = app.acquire_token_silent_with_error(list(SCOPES), account, force_refresh=force_refresh)
                    if cache.has_state_changed:
                        self._caches.save(self._connection_id, cache.serialize(), lease=lease)
            except ResourceNotFoundError:
                raise TokenUnavailable("no token cache for this connection") from None
            except RefreshBusy as exc:
                raise GraphUnavailable(0, "tokenRefreshBusy", str(exc), retry_after=5.0) from None
        if result is None:
            raise TokenUnavailable("no refresh token")
        if "access_token" not in result:
            error = str(result.get("error", "unknown_error"))
            description = str(result.get("error_description", ""))
            if error in GRANT_LOST:
                raise TokenUnavailable(f"{error}: {description}".strip(": "))
            raise GraphUnavailable(0, error, f"token refresh failed: {description}", retry_after=5.0)
        return str(result["access_token"]), float(result.get("expires_in", 0))
