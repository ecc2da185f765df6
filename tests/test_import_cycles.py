"""devtools/import_cycles.py: the repository has no import cycle, and the checker finds the ones it should."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devtools.import_cycles import DEFAULT_PATHS, ROOT, find_cycles, imports_of, main, module_files, strongly_connected


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run(root: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["--root", str(root), *args, "pkg"])
    return code, capsys.readouterr().out.splitlines()


def cycle_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(" ")]


def test_the_repository_has_no_import_cycle() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.import_cycles"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("no import cycles in "), done.stdout


def test_the_repository_scan_sees_real_imports() -> None:
    """Guards the test above against passing because nothing was resolved."""
    cycles, count = find_cycles(ROOT, DEFAULT_PATHS, type_checking=True)
    assert cycles == []  # not even through TYPE_CHECKING-only imports
    assert count > 100
    modules = module_files(ROOT, DEFAULT_PATHS)
    assert {"function_app", "sync_core", "devtools.emulator.server", "tests.conftest"} <= set(modules)
    targets = {edge.target for edge in imports_of(modules["devtools.emulator.server"], modules)}
    assert {"devtools.emulator.mail", "devtools.emulator.web", "devtools.emulator.state"} <= targets


def test_finds_a_top_level_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "import pkg.a\n"})
    code, lines = run(tmp_path, capsys=capsys)
    assert code == 1
    assert lines == [
        "pkg.a -> pkg.b -> pkg.a",
        "    pkg/a.py:1 imports pkg.b",
        "    pkg/b.py:1 imports pkg.a",
    ]


def test_finds_a_cycle_hidden_by_a_function_local_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/server.py": """\
                from pkg.helpers import helper

                class Server:
                    def __init__(self):
                        from . import component  # "imported here to avoid a cycle"
                        self.component = component.Component(self)
                """,
            "pkg/helpers.py": "def helper(): ...\n",
            "pkg/component.py": "from .server import Server\n",
        },
    )
    code, lines = run(tmp_path, capsys=capsys)
    assert code == 1
    assert lines == [
        "pkg.component -> pkg.server -> pkg.component",
        "    pkg/component.py:1 imports pkg.server",
        "    pkg/server.py:5 (inside a function) imports pkg.component",
    ]


def test_cycles_through_type_checking_imports_are_tolerated_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The explicit choice: ``if TYPE_CHECKING:`` imports never run, so by default they make no cycle."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                import typing
                if typing.TYPE_CHECKING:
                    from pkg.b import B
                class A: ...
                """,
            "pkg/b.py": "from pkg.a import A\nclass B: ...\n",
        },
    )
    assert run(tmp_path, capsys=capsys) == (0, ["no import cycles in 3 modules"])
    code, lines = run(tmp_path, "--type-checking", capsys=capsys)
    assert code == 1
    assert "    pkg/a.py:3 (under TYPE_CHECKING) imports pkg.b" in lines


def test_the_else_of_type_checking_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    pass
                else:
                    from pkg import b
                """,
            "pkg/b.py": "from pkg import a\n",
        },
    )
    code, lines = run(tmp_path, capsys=capsys)
    assert (code, cycle_lines(lines)) == (1, ["pkg.a -> pkg.b -> pkg.a"])


def test_a_package_importing_its_submodules_is_no_cycle_but_importing_the_package_back_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.sub.a import A\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/a.py": "import pkg.sub.b\nclass A: ...\n",
            "pkg/sub/b.py": "from ..sub import c\n",
            "pkg/sub/c.py": "",
        },
    )
    assert run(tmp_path, capsys=capsys) == (0, ["no import cycles in 5 modules"])
    (tmp_path / "pkg/sub/c.py").write_text("from pkg import A\n")
    code, lines = run(tmp_path, capsys=capsys)
    assert (code, cycle_lines(lines)) == (1, ["pkg -> pkg.sub.a -> pkg.sub.b -> pkg.sub.c -> pkg"])


def test_each_module_of_a_component_gets_its_shortest_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "from . import a, c\n",
            "pkg/c.py": "from .a import x\n",
            "pkg/d.py": "from . import a\n",  # imports into the cycle, is on none
        },
    )
    code, lines = run(tmp_path, capsys=capsys)
    assert (code, cycle_lines(lines)) == (1, ["pkg.a -> pkg.b -> pkg.a", "pkg.a -> pkg.b -> pkg.c -> pkg.a"])


def test_strongly_connected_components() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["a"], "g": []}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d", "e"], ["f"], ["g"]]


def test_unparsable_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"pkg/__init__.py": "def broken(:\n"})
    assert main(["--root", str(tmp_path), "pkg"]) == 2
    assert "cannot parse" in capsys.readouterr().err
