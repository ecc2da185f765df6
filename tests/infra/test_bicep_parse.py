"""Every template under infra/ parses with pycep-parser (the parser checkov uses; there is no Bicep CLI here),
every module it names exists, and main.bicepparam fits main.bicep. The parse gate is shown failing on a broken copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from devtools.checkov import INFRA, parse_bicep
from tests.infra import Templates

PARAM_LINE = re.compile(r"^param\s+(\w+)\s*=\s*(.+)$", re.MULTILINE)


def test_every_bicep_file_parses(bicep_files: list[Path]) -> None:
    parsed = parse_bicep(bicep_files)

    assert parsed.errors == {}
    assert sorted(parsed.trees) == bicep_files


def test_a_syntax_error_in_main_fails_the_parse(tmp_path: Path) -> None:
    text = (INFRA / "main.bicep").read_text()
    broken = tmp_path / "main.bicep"
    broken.write_text(text.replace("\n}\n", "\n\n", 1))  # drop the first closing brace

    parsed = parse_bicep([broken])

    assert list(parsed.errors) == [broken]
    assert re.search(r"line \d+", parsed.errors[broken]), parsed.errors[broken]
    assert parsed.trees == {}


def test_every_module_exists_and_every_template_is_used(templates: Templates) -> None:
    used = {"main.bicep"}
    for file, tree in templates.items():
        for symbol, module in (tree.get("modules") or {}).items():
            target = ((INFRA / file).parent / module["detail"]["path"]).resolve()
            assert target.is_file(), f"{file}: module {symbol} points at missing {target}"
            used.add(target.relative_to(INFRA).as_posix())

    assert sorted(used) == sorted(templates), "templates that main.bicep never deploys are not checked for real"


def test_the_parameter_file_sets_only_and_all_required_parameters_of_main(templates: Templates) -> None:
    text = (INFRA / "main.bicepparam").read_text()
    assigned = dict(PARAM_LINE.findall(text))
    declared = templates["main.bicep"]["parameters"]
    required = {name for name, decl in declared.items() if decl["default"] is None}

    assert "using './main.bicep'" in text
    assert sorted(set(assigned) - set(declared)) == [], "main.bicepparam sets parameters main.bicep does not declare"
    assert sorted(required - set(assigned)) == [], "main.bicepparam leaves required parameters unset"
