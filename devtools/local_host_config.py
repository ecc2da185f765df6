"""What the local host reads before it starts: ``host.json``'s HTTP and queue options, ``local.settings.json``.

Defaults are the Functions host's documented ones (host.json reference, "queues" and "http"); a bad value fails
with its JSON path, e.g. ``host.json extensions.queues.batchSize``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# TimeSpan as host.json writes it: [d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
MAX_BATCH_SIZE = 32  # the Storage queue service returns at most 32 messages per receive


class ConfigError(ValueError):
    """A host.json or local.settings.json value the local host cannot use; the message names it."""


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: Literal["base64", "none"] = "base64"


@dataclass(frozen=True)
class HostOptions:
    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()


def parse_timespan(value: Any, field: str) -> float:
    """Seconds in a host.json TimeSpan (``"00:00:10"``, ``"00:00:00.500"``, ``"1.00:00:00"``)."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{field}: {value!r} is not a TimeSpan like '00:00:10'")
    days, hours, minutes, seconds, fraction = match.groups()
    return (
        int(days or 0) * 86400
        + int(hours) * 3600
        + int(minutes) * 60
        + int(seconds)
        + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    )


def read_host_json(path: Path) -> HostOptions:
    """The options of ``host.json`` the local host honours."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    extensions = _section(document, "extensions", path.name)
    http = _section(extensions, "http", f"{path.name} extensions")
    queues = _section(extensions, "queues", f"{path.name} extensions")
    prefix = http.get("routePrefix", "api")
    if not isinstance(prefix, str):
        raise ConfigError(f"{path.name} extensions.http.routePrefix: must be a string")
    return HostOptions(route_prefix=prefix.strip("/"), queues=_queue_options(queues, f"{path.name} extensions.queues"))


def _queue_options(raw: Mapping[str, Any], where: str) -> QueueOptions:
    batch = _int(raw, "batchSize", 16, where, lowest=1, highest=MAX_BATCH_SIZE)
    # The host's default threshold is half the batch size.
    threshold = _int(raw, "newBatchThreshold", batch // 2, where, lowest=0, highest=None)
    encoding = raw.get("messageEncoding", "base64")
    if encoding not in ("base64", "none"):
        raise ConfigError(f"{where}.messageEncoding: {encoding!r} is not 'base64' or 'none'")
    polling = parse_timespan(raw.get("maxPollingInterval", "00:01:00"), f"{where}.maxPollingInterval")
    if polling < 0.1:  # the host's documented minimum
        raise ConfigError(f"{where}.maxPollingInterval: must be at least 00:00:00.100")
    return QueueOptions(
        batch_size=batch,
        new_batch_threshold=threshold,
        max_dequeue_count=_int(raw, "maxDequeueCount", 5, where, lowest=1, highest=None),
        visibility_timeout=parse_timespan(raw.get("visibilityTimeout", "00:00:00"), f"{where}.visibilityTimeout"),
        max_polling_interval=polling,
        message_encoding=encoding,
    )


def _section(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.{key}: must be an object")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, *, lowest: int, highest: int | None) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest or (highest and value > highest):
        bounds = f"{lowest}..{highest}" if highest else f">= {lowest}"
        raise ConfigError(f"{where}.{key}: {value!r} is not an integer {bounds}")
    return value


@dataclass(frozen=True)
class LocalSettings:
    values: dict[str, str]
    http_port: int | None


def read_local_settings(path: Path) -> LocalSettings:
    """``Values`` and ``Host.LocalHttpPort`` of a ``local.settings.json`` (Core Tools' format)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    if document.get("IsEncrypted"):
        raise ConfigError(f"{path.name} IsEncrypted: encrypted settings need Core Tools; store them decrypted")
    values = _section(document, "Values", path.name)
    bad = [key for key, value in values.items() if not isinstance(value, str)]
    if bad:
        raise ConfigError(f"{path.name} Values.{bad[0]}: every value must be a string")
    port = _section(document, "Host", path.name).get("LocalHttpPort")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise ConfigError(f"{path.name} Host.LocalHttpPort: {port!r} is not a port number")
    return LocalSettings(values=dict(values), http_port=port)


def apply_values(values: Mapping[str, str], environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Copy settings into the environment like ``func start``: a variable already set wins. Returns what was set."""
    applied = [key for key in values if key not in environ]
    for key in applied:
        environ[key] = values[key]
    return applied


def connection_string(setting: str, environ: Mapping[str, str], function_name: str) -> str:
    """The connection string a trigger's ``connection`` names (the setting, or ``AzureWebJobs<setting>``)."""
    for key in (setting, f"AzureWebJobs{setting}"):
        if environ.get(key):
            return environ[key]
    raise ConfigError(
        f"Functions.{function_name}: connection setting {setting!r} is not set (the local host needs a "
        "connection string; identity-based connections are not emulated)"
    )
