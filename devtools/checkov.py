"""checkov and pycep-parser in their own venv (.venv-checkov), and the gate over checkov's JSON report.

checkov pins an old pycep-parser and packaging, so it cannot share .venv (docs/offline-toolchain.md, "Bicep without
the Bicep CLI"). Only the standard library is imported at module level: ``python devtools/checkov.py parse FILE...``
runs inside .venv-checkov, where pycep lives.

    python -m devtools.checkov setup    create or update .venv-checkov (a no-op when it is up to date)
    python -m devtools.checkov check    run checkov over infra/ and exit 1 on any gate problem
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VENV = ROOT / ".venv-checkov"
REQUIREMENTS = ROOT / "requirements-checkov.txt"
STAMP = VENV / ".installed"
SKIP_COMMENT = re.compile(r"checkov:skip=([\w-]+)")
NO_REASON = "No comment provided"  # what checkov reports for a skip comment without ": reason"


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def ensure_venv() -> Path:
    """Create or update .venv-checkov from requirements-checkov.txt (hash-locked) and return its python; fast when
    up to date."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        _run([sys.executable, "-m", "venv", "--clear", str(VENV)])
    # Every package with its hashes (make lock): a download that does not match fails the install.
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes"]
    _run([*pip, "-r", str(REQUIREMENTS)])
    STAMP.write_text(wanted)  # only after a complete install, so a failed one is retried
    return python


@dataclass(frozen=True)
class Parsed:
    """pycep's JSON tree of each file that parsed, and the parser's message for each that did not."""

    trees: dict[Path, Any]
    errors: dict[Path, str]


def parse_bicep(paths: list[Path]) -> Parsed:
    """Parse Bicep files with pycep-parser, the parser checkov itself uses, in one .venv-checkov process."""
    python = ensure_venv()
    report = json.loads(_run([str(python), str(Path(__file__).resolve()), "parse", *map(str, paths)]))
    return Parsed(
        trees={Path(p): tree for p, tree in report["trees"].items()},
        errors={Path(p): message for p, message in report["errors"].items()},
    )


def run_checkov(directory: Path) -> dict[str, Any]:
    """checkov's JSON report on every .bicep file under ``directory``, offline (no download, no update check)."""
    ensure_venv()
    command = [str(VENV / "bin" / "checkov"), "--framework", "bicep", "--skip-download"]
    command += ["--directory", str(directory), "--output", "json", "--soft-fail"]  # the gate below decides
    report: dict[str, Any] = json.loads(_run(command, env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}))
    # With nothing to scan, checkov prints the bare summary.
    return report if "summary" in report else {"summary": report, "results": {}}


def gate_problems(report: dict[str, Any], directory: Path) -> list[str]:
    """Why a checkov report must fail the build; empty when it passes."""
    results = report["results"]
    # checkov exits 0 on a file it cannot parse (docs/offline-toolchain.md): only the report tells.
    problems = [f"checkov could not parse {path}" for path in results.get("parsing_errors", [])]
    problems += [
        f"{c['check_id']} failed on {c['resource']} in {c['file_path']}: {c['check_name']}"
        for c in results.get("failed_checks", [])
    ]
    if report["summary"]["resource_count"] == 0:
        problems.append(f"checkov found no resource to check under {directory}")
    skipped = results.get("skipped_checks", [])
    problems += [
        f"{c['check_id']} is skipped on {c['resource']} in {c['file_path']} without a reason"
        for c in skipped
        if c["check_result"].get("suppress_comment", NO_REASON).strip() in ("", NO_REASON)
    ]
    # A skip comment that no check used is stale (the check id is wrong, or the finding was fixed).
    declared = Counter(
        (f"/{path.relative_to(directory)}", check)
        for path in sorted(directory.rglob("*.bicep"))
        for check in SKIP_COMMENT.findall(path.read_text())
    )
    used = Counter((c["file_path"], c["check_id"]) for c in skipped)
    problems += [f"{path}: checkov:skip={check} matches no finding" for path, check in declared - used]
    return problems


def _parse_command(paths: list[str]) -> None:
    from pycep import BicepParser  # type: ignore[import-not-found]  # installed in .venv-checkov only, not .venv

    parser = BicepParser()
    report: dict[str, dict[str, Any]] = {"trees": {}, "errors": {}}
    for path in paths:
        try:
            report["trees"][path] = parser.parse(file_path=Path(path))
        except Exception as exc:  # lark's and pycep's own errors: the message is the finding
            report["errors"][path] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    json.dump(report, sys.stdout, default=str)


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "setup":
        print(ensure_venv())
    elif command == "parse":
        _parse_command(args)
    elif command == "check":
        problems = gate_problems(run_checkov(INFRA), INFRA)
        print("\n".join(problems) or "checkov: no problem")
        return 1 if problems else 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
