"""The service's configuration: one pydantic model read from the environment.

In Azure the environment is the function app's settings (Key Vault references resolve to plain values
before the process sees them); locally it is ``local.settings.json``'s ``Values``, loaded by the local host.
Field aliases are the exact setting names; ``infra/`` declares the same names (checked by a test).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync_core.event_signing import BadSecret, secret_bytes

MIB = 1024 * 1024
THREE_MIB = 3 * MIB
MAX_EVENTS_SECRETS = 2  # the current one and, while it is rotated, the next
_EVENTS_URL = re.compile(r"^(https://|http://(127\.0\.0\.1|localhost)[:/])")


class StorageSettings(BaseSettings):
    """Where the service's storage is: all that reading and queueing need (the operator's CLI starts here)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    # Storage: a connection string locally (Azurite); identity-based in Azure (Functions' own convention,
    # the same setting the queue triggers use).
    storage_connection_string: SecretStr | None = Field(default=None, alias="AzureWebJobsStorage")
    storage_account_name: str | None = Field(default=None, alias="AzureWebJobsStorage__accountName")
    storage_client_id: str | None = Field(default=None, alias="AzureWebJobsStorage__clientId")
    storage_blob_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_queue_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__queueServiceUri")
    storage_table_service_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__tableServiceUri")

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Self:
        if (
            self.storage_connection_string is None
            and self.storage_account_name is None
            and not (
                self.storage_blob_service_uri and self.storage_queue_service_uri and self.storage_table_service_uri
            )
        ):
            raise ValueError(
                "storage is not configured: set AzureWebJobsStorage (connection string) or "
                "AzureWebJobsStorage__accountName (identity-based connection)"
            )
        return self


class Settings(StorageSettings):
    """Every setting the app reads. A missing or malformed one fails with the setting's name."""

    # Microsoft identity platform and Graph (or the local emulator standing in for both).
    graph_client_id: str = Field(alias="GRAPH_CLIENT_ID", min_length=1)
    graph_client_secret: SecretStr = Field(alias="GRAPH_CLIENT_SECRET")
    graph_authority: str = Field(default="https://login.microsoftonline.com/common", alias="GRAPH_AUTHORITY")
    graph_base_url: str = Field(default="https://graph.microsoft.com/v1.0", alias="GRAPH_BASE_URL")
    # Only for the emulator's self-signed certificate; empty means the system trust store.
    graph_ca_bundle: str | None = Field(default=None, alias="GRAPH_CA_BUNDLE")

    # Where Graph and browsers reach this app (notificationUrl, lifecycleNotificationUrl, OAuth redirect).
    public_base_url: str = Field(alias="PUBLIC_BASE_URL", pattern=r"^https?://")

    # Secrets shared with Enrollio and used at rest.
    enrollio_shared_secret: SecretStr = Field(alias="ENROLLIO_SHARED_SECRET")
    # "kid:base64key[,kid:base64key...]": the first key encrypts, every key decrypts (rotation).
    token_encryption_keys: SecretStr = Field(alias="TOKEN_ENCRYPTION_KEYS")
    # Comma-separated URL prefixes the connect flow may redirect back to.
    enrollio_return_urls: str = Field(default="", alias="ENROLLIO_RETURN_URLS")

    # How long one call may spend retrying Graph's 429/503/504 (honouring Retry-After) before giving up.
    graph_retry_budget_seconds: float = Field(default=20.0, alias="GRAPH_RETRY_BUDGET_SECONDS", gt=0)
    # R9, inbound: a synced message's attachments are at most this big each.
    attachment_cap_bytes: int = Field(default=THREE_MIB, alias="ATTACHMENT_CAP_BYTES", gt=0)
    # Sending: the tenant's message size limit (Exchange Online's default 35 MB, at most 150 MB; CONTRACT.md
    # section 5), compared with the message's encoded size as Exchange counts it. A send over it is a 413 naming
    # it before Graph is asked; set it to the tenant's own limit. At most 150,000,000: a larger message could not
    # pass Outlook's upload throttle (150 MB per 5 minutes, CONTRACT.md section 8).
    max_message_bytes: int = Field(default=35 * MIB, alias="MAX_MESSAGE_BYTES", gt=0, le=150_000_000)
    signature_window_seconds: int = Field(default=300, alias="SIGNATURE_WINDOW_SECONDS", gt=0)
    # The catch-up timer's requests wait a delay of 0 to this many seconds (per connection), so rounds spread over
    # the quarter hour until its next run (docs/capacity.md); 0: all at once (the offline stack's tests and soak).
    catchup_spread_seconds: int = Field(default=900, alias="CATCHUP_SPREAD_SECONDS", ge=0, le=900)

    # Events to Enrollio (Standard Webhooks): where they are posted, unset for none; the whsec_ secret they are signed
    # with, or two separated by a space while it is rotated (each delivery then carries both signatures). https, or
    # http to a loopback address (a local run). Checked by ``events_problem``, not by validation: a wrong events
    # setting turns events off (reported on /api/health, logged), never mail sync with them.
    enrollio_events_url: str | None = Field(default=None, alias="ENROLLIO_EVENTS_URL")
    enrollio_events_secret: SecretStr | None = Field(default=None, alias="ENROLLIO_EVENTS_SECRET")

    # Telemetry: Application Insights (OpenTelemetry with the Azure Monitor exporter) when its connection string is
    # set, authenticated as the app's identity when the authentication string names one; OTEL_TRACES_EXPORTER=console
    # prints the spans of a local run.
    applicationinsights_connection_string: str | None = Field(
        default=None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    applicationinsights_authentication_string: str | None = Field(
        default=None, alias="APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
    )
    otel_traces_exporter: str | None = Field(default=None, alias="OTEL_TRACES_EXPORTER")

    @field_validator("enrollio_events_url", mode="before")
    @classmethod
    def _blank_url_is_no_events(cls, value: object) -> object:
        # Bicep writes the setting empty when events are off (and a portal user may clear it): that is "unset".
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def events_problem(self) -> str | None:
        """Why events are off although ``ENROLLIO_EVENTS_URL`` is set (naming the setting, never its value)."""
        if not self.enrollio_events_url:
            return None
        if not _EVENTS_URL.match(self.enrollio_events_url):
            return "ENROLLIO_EVENTS_URL must be https (or http to 127.0.0.1 or localhost)"
        if self.enrollio_events_secret is None:
            return "ENROLLIO_EVENTS_SECRET is required when ENROLLIO_EVENTS_URL is set"
        secrets = self.enrollio_events_secret.get_secret_value().split()
        if not 1 <= len(secrets) <= MAX_EVENTS_SECRETS:
            return f"ENROLLIO_EVENTS_SECRET must hold 1 or {MAX_EVENTS_SECRETS} secrets (space-separated)"
        try:
            for secret in secrets:
                secret_bytes(secret)
        except BadSecret as bad:
            return f"ENROLLIO_EVENTS_SECRET {bad}"
        return None

    @property
    def events_enabled(self) -> bool:
        return bool(self.enrollio_events_url) and self.events_problem is None

    @property
    def events_keys(self) -> tuple[bytes, ...]:
        """The keys each event is signed with (only when events are enabled: ``events_problem`` checked them)."""
        value = self.enrollio_events_secret.get_secret_value() if self.enrollio_events_secret else ""
        return tuple(secret_bytes(secret) for secret in value.split())

    @property
    def return_url_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.enrollio_return_urls.split(",") if p.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use (never at import time)."""
    settings = Settings()  # values come from the environment
    if settings.events_problem:  # once per process; /api/health reports it on every call
        logging.getLogger(__name__).error("events to Enrollio are off: %s", settings.events_problem)
    return settings
