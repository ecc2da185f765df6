"""The repository stands alone: a clone with nothing beside it has everything the code, the tests and the docs use.

Nothing refers to the team's reference folder that sits beside the repository on the team's machines (its content
was copied into docs/ and tests/graph_samples/, with sources); every relative link in the Markdown files resolves to
a file inside the repository; the Graph samples are all listed with a source; and the code's citations of the Graph
contract's sections ("CONTRACT.md section 2.1") name sections that docs/graph-contract.md has.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "graph_samples"
CONTRACT = ROOT / "docs" / "graph-contract.md"
# Installs symlinked or created beside the code: not the repository's content.
INSTALLS = (".venv", ".venv-checkov", "node_modules")

# The team's folder: its relative path, a path into it (its graph, product, TOOLCHAIN.md...), or a Path join that
# builds one. Spelled with [/] so that this file does not match itself. "shared secret" and "shared keys" are fine.
TEAM_FOLDER = re.compile(
    r"\.\.[/\\]shared\b"
    r"|(?<![\w.-])shared[/\\](?:graph|product|samples|TOOLCHAIN|STYLE|README|hooks)\b"
    r"""|["']shared["']\s*[/,]"""
)
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
INLINE_LINK = re.compile(r"""\]\(\s*<?([^)\s>]+)>?(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)""")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
CONTRACT_CITATION = re.compile(r"CONTRACT(?:\.md)?,?\s+(?:sections?\s+|s\.\s*)?(\d+(?:\.\d+)?)(?:\s*-\s*(\d+))?")
CONTRACT_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", re.MULTILINE)


def repository_files() -> list[Path]:
    """Every file git tracks, or would track (untracked but not ignored), except the symlinked installs."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no file list to check")
    listing = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = []
    for name in sorted(set(filter(None, listing.split("\0")))):
        path = ROOT / name
        if path.parts[len(ROOT.parts)].startswith(INSTALLS) or path.is_symlink() or not path.is_file():
            continue
        files.append(path)
    assert files, "git listed no files"
    return files


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def relative_links(markdown: str) -> list[str]:
    """The targets of inline and reference links that point into the repository (no URL, no bare #anchor)."""
    prose = FENCE.sub("", markdown)
    targets = INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    return [t for t in targets if not SCHEME.match(t) and not t.startswith(("#", "//"))]


def test_nothing_refers_to_the_team_folder_beside_the_repository() -> None:
    found = []
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if TEAM_FOLDER.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "copy what is needed into the repository (docs/, tests/graph_samples/) instead:\n" + "\n".join(
        found
    )


def test_the_team_folder_pattern_catches_what_it_must_and_nothing_else() -> None:
    up = "/".join(("..", "shared"))
    join = 'parents[3] / "shared"' + ' / "graph"'
    for line in (f"[spec]({up}/product/SPEC.md)", f"({up}/TOOLCHAIN.md)", "see shared" + "/graph/samples", join):
        assert TEAM_FOLDER.search(line), line
    for line in ("HMAC secret shared with Enrollio", "enrollio-shared-secret", "storage (shared keys off)"):
        assert not TEAM_FOLDER.search(line), line


def test_every_relative_link_in_the_markdown_files_resolves_inside_the_repository() -> None:
    markdown = [p for p in repository_files() if p.suffix.lower() == ".md"]
    assert ROOT / "README.md" in markdown
    assert {"graph-contract.md", "product-rules.md", "offline-toolchain.md"} <= {
        p.name for p in markdown if p.parent == ROOT / "docs"
    }
    broken = []
    checked = 0
    for page in markdown:
        for target in relative_links(page.read_text()):
            checked += 1
            path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
            resolved = ((ROOT / path.lstrip("/")) if path.startswith("/") else (page.parent / path)).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: ({target})")
    assert checked > 0, "no relative links found: the link parser is broken"
    assert not broken, "links that do not resolve to a file in the repository:\n" + "\n".join(broken)


def test_the_link_reader_sees_inline_and_reference_links_but_not_urls_or_code() -> None:
    page = (
        "See [`docs/a.md`](docs/a.md#part) and ![img](b.png 'x')\n"
        '[d](d.md "title") [web](https://example.com) [top](#top)\n'
        "[c]: <c.md>\n"
        "```\n[e](e.md)\n```\n"
    )
    assert sorted(relative_links(page)) == ["b.png", "c.md", "d.md", "docs/a.md#part"]


def test_every_graph_sample_parses_and_is_listed_with_its_source() -> None:
    readme = (SAMPLES / "README.md").read_text()
    rows = {m[1]: m[2].strip() for m in re.finditer(r"^\| `([\w.-]+\.json)` \|[^|]*\|(.*)\|\s*$", readme, re.M)}
    files = sorted(p.name for p in SAMPLES.glob("*.json"))
    assert files, "no samples in tests/graph_samples"
    for name in files:
        json.loads((SAMPLES / name).read_text())
        assert rows.get(name), f"{name} has no row with a source in tests/graph_samples/README.md"
    assert sorted(rows) == files, "the README lists samples that are not in the folder"


def test_the_contract_sections_cited_in_code_exist_in_docs_graph_contract() -> None:
    sections = set(CONTRACT_HEADING.findall(CONTRACT.read_text()))
    assert {"1", "1.1", "2.1", "9", "10"} <= sections
    missing = []
    for path in repository_files():
        if path.suffix != ".py":
            continue
        for match in CONTRACT_CITATION.finditer(path.read_text()):
            first, last = match[1], match[2]
            cited = [first] if last is None else [str(n) for n in range(int(first), int(last) + 1)]
            missing += [f"{path.relative_to(ROOT)}: {match[0]!r}" for s in cited if s not in sections]
    assert not missing, "citations of sections docs/graph-contract.md does not have:\n" + "\n".join(missing)
