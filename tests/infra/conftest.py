"""Fixtures for the infra/ checks: the templates parsed once per session, and copies with one change injected.

pycep-parser and checkov run in .venv-checkov; `make setup` creates it, and when it is missing or stale it is
created here, after collection, so its minute-long install does not count against a test's timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.checkov import INFRA, ensure_venv, parse_bicep
from tests.infra import Mutate, Mutation, Templates

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if any(item.path.is_relative_to(HERE) for item in items):
        ensure_venv()  # a failed install fails the run (never a skip)


@pytest.fixture(scope="session")
def bicep_files() -> list[Path]:
    files = sorted(INFRA.rglob("*.bicep"))
    assert files, f"no .bicep file under {INFRA}"
    return files


@pytest.fixture(scope="session")
def templates(bicep_files: list[Path]) -> Templates:
    """Every template's tree, keyed by its path under infra/; a template that does not parse fails here."""
    parsed = parse_bicep(bicep_files)
    assert not parsed.errors, f"templates that do not parse: {parsed.errors}"
    return {path.relative_to(INFRA).as_posix(): tree for path, tree in parsed.trees.items()}


@pytest.fixture(scope="session")
def mutate(templates: Templates, tmp_path_factory: pytest.TempPathFactory) -> Mutate:
    """Parse mutated copies in one go: {label: mutation} -> {label: the templates with that one file changed}."""

    def apply(mutations: dict[str, Mutation]) -> dict[str, Templates]:
        workdir = tmp_path_factory.mktemp("mutants")
        copies: dict[str, tuple[str, Path]] = {}
        for label, (file, old, new) in mutations.items():
            text = (INFRA / file).read_text()
            assert text.count(old) == 1, f"mutation {label!r}: {old!r} must occur exactly once in {file}"
            copy = workdir / label / file
            copy.parent.mkdir(parents=True)
            copy.write_text(text.replace(old, new))
            copies[label] = (file, copy)
        parsed = parse_bicep([copy for _, copy in copies.values()])
        assert not parsed.errors, f"mutants that do not parse: {parsed.errors}"
        return {label: {**templates, file: parsed.trees[copy]} for label, (file, copy) in copies.items()}

    return apply
