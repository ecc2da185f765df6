"""Policies over the parsed templates: no key-based access, HTTPS only, TLS 1.2, no secret in outputs or plain
app settings, every role assignment scoped to its resource. Each policy also runs on a copy that breaks it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

import pytest

from devtools.checkov import INFRA
from tests.infra import (
    Mutate,
    Mutation,
    Templates,
    app_settings,
    list_functions,
    mentions,
    resolve,
    resources,
    secure_params,
)

STORAGE = "Microsoft.Storage/storageAccounts"
SITE = "Microsoft.Web/sites"
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{\w+\}\)$")
# The settings sync_core/settings.py types as SecretStr and Azure sets (test_infra_names.py keeps this in step).
SECRET_SETTINGS = ("GRAPH_CLIENT_SECRET", "ENROLLIO_SHARED_SECRET", "TOKEN_ENCRYPTION_KEYS", "ENROLLIO_EVENTS_SECRET")
PARAM_LINE = re.compile(r"^param\s+(\w+)\s*=\s*(.+)$", re.MULTILINE)
# A secret comes from the deploying shell's environment; an optional one may default to empty (never to a value).
FROM_ENVIRONMENT = re.compile(r"^readEnvironmentVariable\('\w+'(, '')?\)$")

# Built-in role definition id -> (role, the type of the resource it must be assigned on).
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", STORAGE),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", STORAGE),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", STORAGE),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", "Microsoft.KeyVault/vaults"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}


def props(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("properties") or {}


def site_config(body: dict[str, Any]) -> dict[str, Any]:
    return props(body).get("siteConfig") or {}


def key_access(templates: Templates) -> list[str]:
    """Storage without shared keys, Application Insights without local auth, no list*() key or SAS call."""
    found = [
        f"{r}: allowSharedKeyAccess is not false"
        for r in resources(templates, STORAGE)
        if props(r.body).get("allowSharedKeyAccess") is not False
    ]
    found += [
        f"{r}: DisableLocalAuth is not true"
        for r in resources(templates, "Microsoft.Insights/components")
        if props(r.body).get("DisableLocalAuth") is not True
    ]
    found += [f"{file}: calls {call}()" for file, tree in templates.items() for call in list_functions(tree)]
    found += [
        f"app setting {k} holds an account key" for k, v in app_settings(templates).items() if "AccountKey=" in str(v)
    ]
    return found


def https_only(templates: Templates) -> list[str]:
    """Function apps HTTPS only with FTP(S) off; storage HTTPS only."""
    found = [
        f"{r}: httpsOnly is not true" for r in resources(templates, SITE) if props(r.body).get("httpsOnly") is not True
    ]
    found += [
        f"{r}: ftpsState is not Disabled"
        for r in resources(templates, SITE)
        if site_config(r.body).get("ftpsState") != "Disabled"
    ]
    found += [
        f"{r}: supportsHttpsTrafficOnly is not true"
        for r in resources(templates, STORAGE)
        if props(r.body).get("supportsHttpsTrafficOnly") is not True
    ]
    return found


def tls_1_2(templates: Templates) -> list[str]:
    """TLS 1.2 at least on the app, its deployment (SCM) endpoint and storage."""
    found = [
        f"{r}: siteConfig.{key} is not 1.2"
        for r in resources(templates, SITE)
        for key in ("minTlsVersion", "scmMinTlsVersion")
        if site_config(r.body).get(key) != "1.2"
    ]
    found += [
        f"{r}: minimumTlsVersion is not TLS1_2"
        for r in resources(templates, STORAGE)
        if props(r.body).get("minimumTlsVersion") != "TLS1_2"
    ]
    return found


def secrets_in_outputs(templates: Templates) -> list[str]:
    """No output carries a @secure() value or a list*() result, or is named like a password (Bicep's linter rule)."""
    found = []
    for file, tree in templates.items():
        for name, output in (tree.get("outputs") or {}).items():
            found += [
                f"{file}: output {name} exposes @secure() {p}" for p in secure_params(tree) if mentions(output, p)
            ]
            found += [f"{file}: output {name} calls {call}()" for call in list_functions(output)]
            if "password" in name.lower():
                found.append(f"{file}: output {name} is named like a password")
    return found


def secrets_in_app_settings(templates: Templates) -> list[str]:
    """Secret settings are Key Vault references; no setting, and no plain module parameter, carries a secret."""
    settings = app_settings(templates)
    found = [
        f"app setting {name} is not a Key Vault reference: {settings.get(name)!r}"
        for name in SECRET_SETTINGS
        if not KEY_VAULT_REFERENCE.match(str(settings.get(name)))
    ]
    for r in resources(templates, "Microsoft.Web/sites/config"):
        secure = secure_params(templates[r.file])
        found += [
            f"{r}: app setting {k} holds @secure() {p}"
            for k, v in props(r.body).items()
            for p in secure
            if mentions(v, p)
        ]
    for file, tree in templates.items():
        for symbol, module in (tree.get("modules") or {}).items():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(file), module["detail"]["path"]))
            plain = set(module["config"].get("params") or {}) - secure_params(templates[target])
            found += [
                f"{file}: module {symbol} receives @secure() {p} in plain param {param}"
                for param in sorted(plain)
                for p in secure_params(tree)
                if mentions(module["config"]["params"][param], p)
            ]
    return found


def role_scopes(templates: Templates) -> list[str]:
    """Every template deploys into a resource group, and every role assignment names the resource it is on."""
    found = [
        f"{file}: targetScope is {tree['globals']['scope']['value']}"
        for file, tree in templates.items()
        if tree["globals"]["scope"]["value"] != "resourceGroup"
    ]
    found += [
        f"{r}: not scoped to a resource of {r.file} (scope: {r.body.get('scope')!r})"
        for r in resources(templates, "Microsoft.Authorization/roleAssignments")
        if r.body.get("scope") not in (templates[r.file].get("resources") or {})
    ]
    return found


def assigned_roles(templates: Templates) -> list[tuple[str, str]]:
    """(role, type of the resource it is assigned on) for every role assignment."""
    assigned = []
    for r in resources(templates, "Microsoft.Authorization/roleAssignments"):
        tree = templates[r.file]
        definition = props(r.body)["roleDefinitionId"]["function"]["parameters"]
        role_id = resolve(tree, definition["resource_name_1"])
        role = ROLES[role_id][0] if role_id in ROLES else role_id
        assigned.append((role, tree["resources"][r.body["scope"]]["type"]))
    return sorted(assigned)


def bicepparam_secrets(main: dict[str, Any], bicepparam: str) -> list[str]:
    """The parameter file gives each @secure() parameter only an environment variable, never a value."""
    assigned = dict(PARAM_LINE.findall(bicepparam))
    return [
        f"main.bicepparam: {name} = {assigned[name]} (a secret must come from readEnvironmentVariable)"
        for name in sorted(secure_params(main))
        if name in assigned and not FROM_ENVIRONMENT.match(assigned[name].strip())
    ]


# policy, a mutation that breaks it, and the finding that mutation must produce.
POLICIES: dict[str, tuple[Callable[[Templates], list[str]], Mutation, str]] = {
    "shared keys": (
        key_access,
        ("modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
        "modules/storage.bicep: account (Microsoft.Storage/storageAccounts): allowSharedKeyAccess is not false",
    ),
    "local auth": (
        key_access,
        ("modules/monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false"),
        "modules/monitoring.bicep: appInsights (Microsoft.Insights/components): DisableLocalAuth is not true",
    ),
    "https only": (
        https_only,
        ("modules/functionapp.bicep", "httpsOnly: true", "httpsOnly: false"),
        "modules/functionapp.bicep: site (Microsoft.Web/sites): httpsOnly is not true",
    ),
    "ftps off": (
        https_only,
        ("modules/functionapp.bicep", "ftpsState: 'Disabled'", "ftpsState: 'FtpsOnly'"),
        "modules/functionapp.bicep: site (Microsoft.Web/sites): ftpsState is not Disabled",
    ),
    "tls 1.2": (
        tls_1_2,
        ("modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"),
        "modules/storage.bicep: account (Microsoft.Storage/storageAccounts): minimumTlsVersion is not TLS1_2",
    ),
    "secret output": (
        secrets_in_outputs,
        ("main.bicep", "output keyVaultName", "output leak string = 'v=${graphClientSecret}'\noutput keyVaultName"),
        "main.bicep: output leak exposes @secure() graphClientSecret",
    ),
    "plain secret setting": (
        secrets_in_app_settings,
        (
            "modules/functionapp.bicep",
            "'@Microsoft.KeyVault(SecretUri=${graphClientSecretUri})'",
            "graphClientSecretUri",
        ),
        "app setting GRAPH_CLIENT_SECRET is not a Key Vault reference: 'graphClientSecretUri'",
    ),
    "secret into a plain module param": (
        secrets_in_app_settings,
        ("modules/keyvault.bicep", "@secure()\nparam graphClientSecret string", "param graphClientSecret string"),
        "main.bicep: module keyVault receives @secure() graphClientSecret in plain param graphClientSecret",
    ),
    "role assignment without scope": (
        role_scopes,
        ("modules/monitoring.bicep", "  scope: appInsights\n", ""),
        "modules/monitoring.bicep: publisher (Microsoft.Authorization/roleAssignments): not scoped to a resource "
        "of modules/monitoring.bicep (scope: None)",
    ),
}


@pytest.fixture(scope="module")
def broken(mutate: Mutate) -> dict[str, Templates]:
    return mutate({label: mutation for label, (_, mutation, _) in POLICIES.items()})


@pytest.mark.parametrize("label", POLICIES)
def test_infra_keeps_the_policy(templates: Templates, label: str) -> None:
    policy, _, _ = POLICIES[label]

    assert policy(templates) == []


@pytest.mark.parametrize("label", POLICIES)
def test_the_policy_catches_a_breach(broken: dict[str, Templates], label: str) -> None:
    policy, _, finding = POLICIES[label]

    assert policy(broken[label]) == [finding]


def test_the_identity_holds_exactly_the_five_roles_each_on_its_resource(templates: Templates) -> None:
    assert assigned_roles(templates) == sorted(ROLES.values())


def test_secure_parameters_come_from_the_environment(templates: Templates) -> None:
    text = (INFRA / "main.bicepparam").read_text()
    leaked = text.replace("readEnvironmentVariable('GRAPH_CLIENT_SECRET')", "'s3cr3t-value'")

    assert bicepparam_secrets(templates["main.bicep"], text) == []
    assert bicepparam_secrets(templates["main.bicep"], leaked) == [
        "main.bicepparam: graphClientSecret = 's3cr3t-value' (a secret must come from readEnvironmentVariable)"
    ]
