"""Where the operator's CLI finds the service: a ``local.settings.json`` and the environment, or an Azure storage
account by name, reached with the operator's own Azure sign-in (``az login``; ``DefaultAzureCredential``).

Reading and queueing (status, resync, renew, replay-poison) need only storage. ``disconnect`` acts at Graph as
the mailbox, so it needs the app's own settings too (Graph client, token encryption keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from sync_core.adapters.storage import StorageClients
from sync_core.clock import Clock, SystemClock
from sync_core.services import Services
from sync_core.settings import Settings, StorageSettings

LOCAL_SETTINGS = Path("local.settings.json")
STORAGE = "AzureWebJobsStorage"


class SettingsError(Exception):
    """The settings cannot reach what a command needs; the message says which setting and why."""


def read_local_settings(path: Path) -> dict[str, str]:
    """``Values`` of a ``local.settings.json`` (Azure Functions Core Tools' format)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise SettingsError(f"{path}: 'Values' must be an object of strings")
    return dict(values)


def gather_values(
    settings_file: Path | None, account_name: str | None, environ: Mapping[str, str]
) -> dict[str, str | None]:
    """The settings file's values, the environment over them (as ``func start`` does), then ``--account-name``:
    that account, reached with the operator's own sign-in, instead of every other storage setting (a connection
    string, another account's endpoints, or the app's managed identity ``__clientId``, which only works inside
    Azure). ``None`` clears a setting the environment has."""
    values: dict[str, str | None] = {**(read_local_settings(settings_file) if settings_file else {}), **environ}
    if account_name:
        values.update({key: None for key in values if key == STORAGE or key.startswith(f"{STORAGE}__")})
        values[f"{STORAGE}__accountName"] = account_name
    return values


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors())


@dataclass
class OpsContext:
    """The settings a command runs with, and the clients built from them on first use."""

    values: Mapping[str, str | None]
    clock: Clock = field(default_factory=SystemClock)

    @cached_property
    def storage_settings(self) -> StorageSettings:
        try:
            # The values already hold the environment; a None among them clears a variable the environment has.
            return StorageSettings.model_validate(dict(self.values))
        except ValidationError as exc:
            raise SettingsError(
                f"storage: {_problems(exc)} (use --settings FILE, the environment, or --account-name NAME)"
            ) from None

    @cached_property
    def storage(self) -> StorageClients:
        return StorageClients(self.storage_settings)

    @cached_property
    def services(self) -> Services:
        """The app's own ports, for the command that acts at Graph (``disconnect``)."""
        try:
            settings = Settings.model_validate(dict(self.values))
        except ValidationError as exc:
            raise SettingsError(
                f"this command acts at Graph as the mailbox and needs the app's settings: {_problems(exc)}"
            ) from None
        return Services(settings, self.clock)
