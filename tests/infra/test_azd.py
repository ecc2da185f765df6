"""``azd up``: ``azure.yaml`` is valid for the Azure Developer CLI and agrees with ``infra/`` and the app.

azd is not installed offline, so its own checks are restated: the file against the rules of azd's published
schema (``azure-yaml.schema.json`` beside this file, which names its source), the function app azd deploys to
found by its ``azd-service-name`` tag, and the parameters azd deploys with: those of ``main.bicepparam``
(whose fit to ``main.bicep`` and secrets from the environment ``test_bicep_parse`` and ``test_infra_policy`` check).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.infra import Templates, resources

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).with_name("azure-yaml.schema.json")).read_text())
SITE = "Microsoft.Web/sites"


def azure_yaml() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "azure.yaml").read_text()))


def problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_azure_yaml_follows_azds_schema() -> None:
    assert problems(azure_yaml()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Enrollio_Sync"}, "does not match"),
        ({"services": {"api": {"project": ".", "language": "python"}}}, "'host' is a required property"),
        ({"services": {"api": {"project": ".", "language": "python", "host": "functions"}}}, "is not one of"),
        ({"services": {}}, "should be non-empty"),
    ],
)
def test_the_schema_check_fails_a_broken_azure_yaml(change: dict[str, Any], expected: str) -> None:
    found = problems({**azure_yaml(), **change})
    assert any(expected in p for p in found), found


def test_infra_and_the_service_project_exist() -> None:
    document = azure_yaml()
    infra = document["infra"]
    assert (infra["provider"], (ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()) == ("bicep", True)
    [(service, spec)] = document["services"].items()
    project = ROOT / spec["project"]
    # What a Python function app publishes from its project folder (host.json, the entry point, requirements).
    for file in ("host.json", "function_app.py", "requirements.txt"):
        assert (project / file).is_file(), f"service {service}: {file} missing in {project}"


def _tag(tags: Any, key: str) -> Any:
    """A tag's value in a site's ``tags`` (a literal object, or ``union(tags, {...})``)."""
    if isinstance(tags, dict) and "function" in tags and tags["function"]["type"] == "union":
        for argument in tags["function"]["parameters"].values():
            if (value := _tag(argument, key)) is not None:
                return value
        return None
    if isinstance(tags, dict):
        return tags.get(key, tags.get(f"'{key}'"))
    return None


def test_azd_deploy_finds_exactly_one_function_app_for_the_service(templates: Templates) -> None:
    [service] = azure_yaml()["services"]
    tagged = [site for site in resources(templates, SITE) if _tag(site.body.get("tags"), "azd-service-name") == service]
    assert len(tagged) == 1, f"azd deploys service {service!r} to the one site tagged azd-service-name: {service}"


def test_azd_deploys_with_main_bicepparam_and_nothing_else() -> None:
    """azd compiles ``<module>.bicepparam`` whenever it exists, in preference to ``<module>.bicep`` with a
    ``<module>.parameters.json`` (Azure/azure-dev, ``cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go``:
    ``modulePath`` "The bicepparam file is preferred over bicep file"; ``compileBicep`` runs ``bicep build-params``
    with the process environment and azd's ``.env`` values appended). So the secrets azd deploys are the ones
    ``main.bicepparam`` reads with ``readEnvironmentVariable()``, as on the manual path, and a parameters file
    beside it would never be read: none may mislead a reader into editing it."""
    infra = azure_yaml()["infra"]
    folder = ROOT / infra["path"]
    assert (folder / f"{infra['module']}.bicepparam").is_file()
    assert sorted(p.name for p in folder.glob("*.parameters.json")) == []
