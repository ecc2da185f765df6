"""Find import cycles among the repository's own modules: ``python -m devtools.import_cycles``.

Prints each cycle as ``a -> b -> a`` (with the import lines that make it, indented below) and exits 1, or prints
``no import cycles in N modules`` and exits 0.

What it reads: every ``.py`` under ``sync_core/``, ``devtools/`` and ``tests/``, and ``function_app.py`` (or the
paths given), parsed with ``ast``, never imported. A file's module name is its path from the root
(``devtools/emulator/__init__.py`` is ``devtools.emulator``).

What counts as an import of module M (only modules of the scanned set count; the standard library and
third-party packages are not followed):
- ``import M`` / ``import M as x``; a package is its ``__init__``;
- ``from M import name``: an import of ``M.name`` when that is a module, else of ``M``;
- relative imports, resolved against the importing module's package;
- imports anywhere in the file: at top level, inside functions and methods (they run when called, and a cycle
  through them is what a function-local import usually hides), under ``try``, ``if __name__ == "__main__"``...
- imports under ``if TYPE_CHECKING:`` are read but, by default, are not counted: they never run, so a cycle
  through them cannot fail at import time and is tolerated. ``--type-checking`` counts them too.
Not counted: the parent packages Python imports implicitly (``import a.b.c`` also runs ``a`` and ``a.b``, but a
package is always initialised before its submodules, so a package's ``__init__`` importing its own submodules is
no cycle); a module importing itself; dynamic imports (``importlib.import_module``, ``__import__``).

Cycles are the strongly connected components of the import graph (Tarjan); for each component it prints, for
each of its modules, the shortest cycle through it, without repeats.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = ("sync_core", "devtools", "tests", "function_app.py")


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` imports ``target`` at ``path:line``."""

    importer: str
    target: str
    path: Path
    line: int
    in_function: bool
    type_checking: bool

    def describe(self, root: Path) -> str:
        where = " (inside a function)" if self.in_function else ""
        where += " (under TYPE_CHECKING)" if self.type_checking else ""
        return f"{self.path.relative_to(root).as_posix()}:{self.line}{where} imports {self.target}"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def module_files(root: Path, paths: Iterable[str]) -> dict[str, Module]:
    """Every module under ``paths`` (directories or .py files, relative to ``root``), by dotted name."""
    modules: dict[str, Module] = {}
    for entry in paths:
        target = root / entry
        files = [target] if target.is_file() else sorted(target.rglob("*.py")) if target.is_dir() else []
        for file in files:
            parts = file.relative_to(root).with_suffix("").parts
            if any(not p.isidentifier() for p in parts):
                continue  # not importable by that name (e.g. a hyphenated script)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            if name:
                modules[name] = Module(name, file, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (any ``x.TYPE_CHECKING``)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[tuple[ast.stmt, bool, bool]]:
    """Every import statement in ``node``, with whether it sits in a function and under ``if TYPE_CHECKING:``."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, in_function, type_checking
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _imports(stmt, in_function, True)
        for stmt in node.orelse:  # the ``else:`` of ``if TYPE_CHECKING:`` is what runs
            yield from _imports(stmt, in_function, type_checking)
    else:
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            yield from _imports(child, inside, type_checking)


def _base_of(node: ast.ImportFrom, module: Module) -> str | None:
    """The module a ``from ... import`` names, absolute; None if a relative import climbs above the top package."""
    if node.level == 0:
        return node.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    climb = node.level - 1  # "from . import" is the package itself, each further dot one package up
    if climb >= len(package):
        return None
    base = package[: len(package) - climb]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: Module, modules: dict[str, Module]) -> list[Import]:
    """The edges from ``module`` to other scanned modules."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    edges: list[Import] = []

    def add(target: str, node: ast.stmt, in_function: bool, type_checking: bool) -> None:
        if target in modules and target != module.name:
            edges.append(Import(module.name, target, module.path, node.lineno, in_function, type_checking))

    for node, in_function, type_checking in _imports(tree, False, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, in_function, type_checking)
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(node, module)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in modules else base, node, in_function, type_checking)
    return edges


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; components of one node included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(graph: dict[str, list[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside one component (breadth-first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for succ in graph[node]:
            if succ not in within:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if succ not in seen:
                seen.add(succ)
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is on no cycle within its component")  # impossible for a real component


def find_cycles(
    root: Path = ROOT, paths: Sequence[str] = DEFAULT_PATHS, *, type_checking: bool = False
) -> tuple[list[list[Import]], int]:
    """Each cycle as its edges in order (the first's importer is the last's target), and the number of modules."""
    modules = module_files(root, paths)
    edges = [
        edge
        for module in modules.values()
        for edge in imports_of(module, modules)
        if type_checking or not edge.type_checking
    ]
    graph: dict[str, list[str]] = {name: [] for name in modules}
    first_edge: dict[tuple[str, str], Import] = {}
    for edge in sorted(edges, key=lambda e: (e.importer, e.line, e.target)):
        if (edge.importer, edge.target) not in first_edge:
            first_edge[edge.importer, edge.target] = edge
            graph[edge.importer].append(edge.target)
    for successors in graph.values():
        successors.sort()
    cycles: list[list[Import]] = []
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        for start in component:
            cycle = _shortest_cycle(graph, start, members)
            ring = cycle[:-1]
            smallest = ring.index(min(ring))
            canonical = tuple(ring[smallest:] + ring[:smallest])
            if canonical in seen:
                continue
            seen.add(canonical)
            closed = [*canonical, canonical[0]]
            cycles.append([first_edge[a, b] for a, b in pairwise(closed)])
    return cycles, len(modules)


def format_cycle(cycle: Sequence[Import], root: Path) -> str:
    names = [edge.importer for edge in cycle] + [cycle[0].importer]
    lines = [" -> ".join(names)]
    lines += [f"    {edge.describe(root)}" for edge in cycle]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.import_cycles", description="Find import cycles among the repository's own modules."
    )
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS), help="directories or .py files to scan")
    parser.add_argument("--root", type=Path, default=ROOT, help="the directory module names are relative to")
    parser.add_argument(
        "--type-checking", action="store_true", help="count imports under `if TYPE_CHECKING:` too (off by default)"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        cycles, count = find_cycles(root, args.paths, type_checking=args.type_checking)
    except SyntaxError as exc:
        print(f"cannot parse {exc.filename}:{exc.lineno}: {exc.msg}", file=sys.stderr)
        return 2
    if not cycles:
        print(f"no import cycles in {count} modules")
        return 0
    for cycle in cycles:
        print(format_cycle(cycle, root))
    print(f"{len(cycles)} import cycle(s) in {count} modules", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
