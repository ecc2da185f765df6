"""Every queue, table, blob container and app setting the code uses is declared in infra/, and infra/ declares
nothing else except the platform-only names listed here, each with its reason.

The code's names are sync_core/names.py (the data model) and sync_core/settings.py's field aliases.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from pydantic import SecretStr

from sync_core import names
from sync_core.settings import Settings
from tests.infra import Mutate, Templates, app_settings, declared_names

QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
TABLE = "Microsoft.Storage/storageAccounts/tableServices/tables"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"

# Declared in infra/ for the platform; the code never reads them.
PLATFORM_CONTAINERS = {
    "app-package": "Flex Consumption runs the published package from it (functionAppConfig.deployment.storage)",
}
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential": "the Functions host reads it: 'managedidentity' selects __clientId's identity",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Python worker exports OpenTelemetry; no duplicate host logs",
    "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME": "the worker exports the sync_core loggers' records, not the SDKs'",
}
# Read by the code but deliberately not set in Azure.
LOCAL_ONLY_SETTINGS = {
    "AzureWebJobsStorage": "a connection string, for Azurite; in Azure shared keys are off and the identity is used",
    "AzureWebJobsStorage__blobServiceUri": "only for non-default endpoints; in Azure __accountName derives them",
    "AzureWebJobsStorage__queueServiceUri": "only for non-default endpoints; in Azure __accountName derives them",
    "AzureWebJobsStorage__tableServiceUri": "only for non-default endpoints; in Azure __accountName derives them",
    "GRAPH_CA_BUNDLE": "trusts the local Graph emulator's self-signed certificate; Azure uses the system store",
    "OTEL_TRACES_EXPORTER": "console: a local run prints its spans; Azure exports to Application Insights",
}

# Azure's naming rules, so a name that would fail the deployment fails here first.
VALID_NAME = {
    QUEUE: re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$"),
    TABLE: re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$"),
    CONTAINER: re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$"),
}

CODE_SETTINGS = {field.alias for field in Settings.model_fields.values() if field.alias}
EXPECTED_SETTINGS = (CODE_SETTINGS - set(LOCAL_ONLY_SETTINGS)) | set(PLATFORM_SETTINGS)


def differences(code: Iterable[str], declared: list[str]) -> list[str]:
    """What the code uses that infra/ lacks, what infra/ declares that the code does not use, and duplicates."""
    code_set, declared_set = set(code), set(declared)
    problems = [f"used by the code, missing in infra/: {name}" for name in sorted(code_set - declared_set)]
    problems += [f"declared in infra/, unknown to the code: {name}" for name in sorted(declared_set - code_set)]
    problems += [f"declared more than once: {name}" for name, n in sorted(Counter(declared).items()) if n > 1]
    return problems


def test_queues_match_the_code_poison_queues_included(templates: Templates) -> None:
    assert differences(names.QUEUES + names.POISON_QUEUES, declared_names(templates, QUEUE)) == []


def test_tables_match_the_code(templates: Templates) -> None:
    assert differences(names.TABLES, declared_names(templates, TABLE)) == []


def test_containers_match_the_code_and_the_platform(templates: Templates) -> None:
    assert differences([*names.CONTAINERS, *PLATFORM_CONTAINERS], declared_names(templates, CONTAINER)) == []


def test_app_settings_match_the_code_and_the_platform(templates: Templates) -> None:
    assert differences(EXPECTED_SETTINGS, list(app_settings(templates))) == []


def test_secret_settings_are_the_ones_the_code_types_as_secrets() -> None:
    # test_infra_policy.py requires a Key Vault reference for exactly these; a new SecretStr field joins them.
    secret = {f.alias for f in Settings.model_fields.values() if f.annotation in (SecretStr, SecretStr | None)}

    assert secret - set(LOCAL_ONLY_SETTINGS) == {
        "GRAPH_CLIENT_SECRET",
        "ENROLLIO_SHARED_SECRET",
        "TOKEN_ENCRYPTION_KEYS",
        "ENROLLIO_EVENTS_SECRET",
    }


def test_the_exception_lists_name_real_things() -> None:
    # Stale entries would quietly widen the "reverse" check.
    assert sorted(set(LOCAL_ONLY_SETTINGS) - CODE_SETTINGS) == []
    assert sorted(set(PLATFORM_SETTINGS) & CODE_SETTINGS) == []
    assert sorted(set(PLATFORM_CONTAINERS) & set(names.CONTAINERS)) == []


def test_every_declared_name_is_valid_in_azure(templates: Templates) -> None:
    invalid = [
        f"{kind.rsplit('/', 1)[-1]}: {name}"
        for kind, pattern in VALID_NAME.items()
        for name in declared_names(templates, kind)
        if not pattern.match(name)
    ]

    assert invalid == []


def test_a_drifted_copy_is_reported_both_ways(mutate: Mutate) -> None:
    drifted = mutate(
        {
            "queues": ("modules/storage.bicep", "  'catchup-requests'\n", "  'catch-up-requests'\n"),
            "settings": (
                "modules/functionapp.bicep",
                "    GRAPH_BASE_URL: graphBaseUrl\n",
                "    GRAPH_URL: graphBaseUrl\n",
            ),
        }
    )
    queues = declared_names(drifted["queues"], QUEUE)
    settings = list(app_settings(drifted["settings"]))

    assert differences(names.QUEUES + names.POISON_QUEUES, queues) == [
        "used by the code, missing in infra/: catchup-requests",
        "declared in infra/, unknown to the code: catch-up-requests",
    ]
    assert differences(EXPECTED_SETTINGS, settings) == [
        "used by the code, missing in infra/: GRAPH_BASE_URL",
        "declared in infra/, unknown to the code: GRAPH_URL",
    ]


def test_the_host_and_the_python_worker_export_opentelemetry_once_as_microsoft_documents(templates: Templates) -> None:
    # learn.microsoft.com/azure/azure-functions/opentelemetry-howto: host.json "telemetryMode": "OpenTelemetry" with
    # APPLICATIONINSIGHTS_CONNECTION_STRING, and PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true "so that the
    # Functions host allows the Python worker process to stream OpenTelemetry logs directly, which prevents duplicate
    # host-level entries"; a logging.applicationInsights section would not apply in that mode.
    import json
    from pathlib import Path

    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    settings = app_settings(templates)
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    assert str(settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"]).strip("'") == "true"
    assert host.get("telemetryMode") == "OpenTelemetry"
    assert "applicationInsights" not in host.get("logging", {})
