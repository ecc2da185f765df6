"""CI runs the browser test (issue 14), and nothing else needs a browser.

- ``.ci/run`` runs ``make test`` with REQUIRE_BROWSER=1, where a missing Chromium fails the browser test instead of
  skipping it (elsewhere it skips, saying why);
- a failing ``apt-get`` does not abort ``make setup``: it says so, and the rule above decides;
- ``make status`` (and the other targets but ``setup`` and ``test``) never installs a browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make") or "/usr/bin/make"


def executable(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def browser_tests(**environ: str) -> subprocess.CompletedProcess[str]:
    """The browser tests with no Chromium; REQUIRE_BROWSER is unset unless given (CI's own setting must not leak)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=ROOT,
        env={**os.environ, "CHROMIUM_PATH": "/nonexistent/chromium", "REQUIRE_BROWSER": "", **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_chromium_the_browser_test_skips_saying_why_but_fails_where_required() -> None:
    skipped = browser_tests()
    assert skipped.returncode == 0, skipped.stdout
    assert "2 skipped" in skipped.stdout and "chromium and chromium-driver are not installed" in skipped.stdout

    required = browser_tests(REQUIRE_BROWSER="1")
    assert required.returncode == 1, required.stdout
    assert "REQUIRE_BROWSER=1 (CI) requires the browser test to run" in required.stdout


def test_ci_runs_make_test_with_the_browser_required(tmp_path: Path) -> None:
    record = tmp_path / "make.env"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "make", f'echo "$@ REQUIRE_BROWSER=$REQUIRE_BROWSER" > {record}')

    subprocess.run([ROOT / ".ci" / "run"], env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=True)

    assert record.read_text().split() == ["test", "REQUIRE_BROWSER=1"]


def test_a_failing_apt_get_is_a_warning_not_a_failed_setup(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # no chromium here; root, and an apt-get whose mirror is unreachable
    bin_dir.mkdir()
    executable(bin_dir / "id", "echo 0")
    executable(bin_dir / "apt-get", 'echo "E: Failed to fetch http://deb.debian.org/ (offline)" >&2; exit 100')

    done = subprocess.run(
        [MAKE, "--no-print-directory", "browser"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert "warning: apt-get could not install chromium and chromium-driver" in done.stderr
    assert "fail where REQUIRE_BROWSER=1" in done.stderr


def test_make_status_never_installs_a_browser() -> None:
    for target in ("status", "run", "demo", "lint", "bench"):
        planned = subprocess.run(
            [MAKE, "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert "apt-get" not in planned and "chromium" not in planned, f"make {target} would install a browser"
    assert "apt-get" in subprocess.run([MAKE, "-n", "browser"], cwd=ROOT, capture_output=True, text=True).stdout
