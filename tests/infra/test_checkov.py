"""checkov over infra/ (in .venv-checkov, --skip-download): no failed check, no parsing error, resources found,
every skip inline with a reason. checkov exits 0 on a file it cannot parse, so the gate reads its JSON report;
a copy of infra/ with one fault of each kind shows the gate failing for each reason.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from devtools import checkov
from devtools.checkov import INFRA, gate_problems, run_checkov

# (file, text, replacement): one fault of each kind the gate must catch.
FAULTS = {
    "parsing error": ("main.bicep", "targetScope = 'resourceGroup'\n", "targetScope = 'resourceGroup'\n}\n"),
    "failed check": ("modules/functionapp.bicep", "    httpsOnly: true\n", "    httpsOnly: false\n"),
    "skip without reason": (
        "modules/storage.bicep",
        "// checkov:skip=CKV_AZURE_43: the name",
        "// checkov:skip=CKV_AZURE_43\n  // the name",
    ),
    "stale skip": (
        "modules/monitoring.bicep",
        "  kind: 'web'\n",
        "  // checkov:skip=CKV_AZURE_999: no such finding\n  kind: 'web'\n",
    ),
}


@pytest.fixture(scope="module")
def faulty_infra(tmp_path_factory: pytest.TempPathFactory) -> Path:
    infra = tmp_path_factory.mktemp("faulty") / "infra"
    shutil.copytree(INFRA, infra)
    for label, (file, old, new) in FAULTS.items():
        text = (infra / file).read_text()
        assert text.count(old) == 1, f"{label}: {old!r} must occur exactly once in {file}"
        (infra / file).write_text(text.replace(old, new))
    return infra


def test_infra_passes_checkov() -> None:
    report = run_checkov(INFRA)

    assert gate_problems(report, INFRA) == []
    assert report["summary"]["resource_count"] > 0
    assert report["summary"]["passed"] > 0


def test_each_kind_of_fault_fails_the_gate(faulty_infra: Path) -> None:
    problems = gate_problems(run_checkov(faulty_infra), faulty_infra)

    assert sorted(problems) == sorted(
        [
            f"checkov could not parse {faulty_infra / 'main.bicep'}",
            "CKV_AZURE_70 failed on Microsoft.Web/sites.site in /modules/functionapp.bicep: "
            "Ensure that Function apps is only accessible over HTTPS",
            "CKV_AZURE_14 failed on Microsoft.Web/sites.site in /modules/functionapp.bicep: "
            "Ensure web app redirects all HTTP traffic to HTTPS in Azure App Service",
            "CKV_AZURE_153 failed on Microsoft.Web/sites.site in /modules/functionapp.bicep: "
            "Ensure web app redirects all HTTP traffic to HTTPS in Azure App Service Slot",
            "CKV_AZURE_43 is skipped on Microsoft.Storage/storageAccounts.account in /modules/storage.bicep "
            "without a reason",
            "/modules/monitoring.bicep: checkov:skip=CKV_AZURE_999 matches no finding",
        ]
    )


def test_nothing_to_check_fails_the_gate(tmp_path: Path) -> None:
    (tmp_path / "params-only.bicep").write_text("param location string = 'westeurope'\n")

    problems = gate_problems(run_checkov(tmp_path), tmp_path)

    assert problems == [f"checkov found no resource to check under {tmp_path}"]


def test_setup_reinstalls_only_when_the_requirements_change(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python = checkov.ensure_venv()
    requirements = tmp_path / "requirements-checkov.txt"
    requirements.write_text("checkov==0.0.1\n")
    commands: list[list[str]] = []

    def record(command: list[str], env: dict[str, str] | None = None) -> str:
        commands.append(command)
        return ""

    monkeypatch.setattr(checkov, "REQUIREMENTS", requirements)
    monkeypatch.setattr(checkov, "STAMP", tmp_path / ".installed")
    monkeypatch.setattr(checkov, "_run", record)

    assert checkov.ensure_venv() == python
    assert checkov.ensure_venv() == python

    # Hashes required (review of i12, finding 10: the venv was installed by version only).
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes"]
    assert commands == [[*pip, "-r", str(requirements)]]  # once: the second call found the stamp up to date
    assert (tmp_path / ".installed").read_text() == hashlib.sha256(b"checkov==0.0.1\n").hexdigest()
