"""The documentation lives in the repository and builds; nothing points outside it.

- No file of the package folders, the benchmarks, the README, the site
  configuration or ``docs/`` (team notes aside) names the developers' folder
  beside the repository or its files: a user of the package does not have them.
- ``mkdocs build --strict`` succeeds (broken links, pages left out of the nav
  and docstring warnings all fail it).
- ``.ci/run`` ends with exactly the test command the README gives.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folders and files whose text a user of braggscope reads.
SCANNED = ("braggscope", "devices", "plans", "simulators", "analysis", "benchmarks", "docs",
           "README.md", "mkdocs.yml", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".yml", ".yaml", ".cfg", ".json"}
OUTSIDE = re.compile(r"shared/|\b(?:CONVENTIONS|ANCHORS|STYLE)\.md\b")
TEST_COMMAND = "python3 -m pytest -q -p no:cacheprovider -n 3 --dist loadfile"


def _text_files():
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            rel = f.relative_to(ROOT)
            if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in rel.parts:
                yield f, rel


def test_scan_covers_the_package_and_docs():
    """The scan below really reads the package modules and the doc pages."""
    scanned = {rel.as_posix() for _, rel in _text_files()}
    for expected in ("braggscope/core/geometry.py", "analysis/sxdm/reduce.py", "docs/conventions.md",
                     "README.md", "mkdocs.yml"):
        assert expected in scanned


def test_outside_pattern_catches_the_forms_used_before():
    """The pattern recognises every way the outside files used to be cited."""
    for cited in ("``shared/CONVENTIONS.md``", "see ../shared/", "(ANCHORS.md)", "STYLE.md"):
        assert OUTSIDE.search(cited), cited
    assert not OUTSIDE.search("see docs/conventions.md")


def test_nothing_points_outside_the_repository():
    offenders = []
    for f, rel in _text_files():
        for lineno, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "files point outside the repository (use docs/ pages):\n" + "\n".join(offenders)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TEST_COMMAND in readme.splitlines(), "README.md must give the test command on a line of its own"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-1] == TEST_COMMAND
    builds = [line for line in ci[:-1] if line.startswith("python3 -m mkdocs build --strict")]
    assert builds, ".ci/run must build the documentation strictly before the tests"
    # mkdocs --quiet raises the log level above WARNING, so --strict then counts nothing and passes
    assert not {"-q", "--quiet"} & set(builds[0].split("#")[0].split()), builds[0]


def test_readme_is_an_entry_not_the_reference():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material to docs/"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (site / "conventions" / "index.html").read_text(encoding="utf-8")
    assert "Tilt azimuth" in page
    api = (site / "api" / "sxdm" / "index.html").read_text(encoding="utf-8")
    assert "reduce_stack" in api and "threshold" in api   # generated from the docstring


def _console_blocks(text):
    return re.findall(r"```console\n(.*?)```", text, re.S)


def test_readme_quick_start_is_the_tested_walkthrough():
    """The README's operator quick start is, line for line, what tests/test_walkthrough.py types."""
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Operator quick start"):]
    quick = quick[:quick.index("\n## ", 1)]
    doc = (ROOT / "docs" / "quickstart.md").read_text()
    walkthrough = doc[doc.index("## Operator walkthrough"):]
    walkthrough = walkthrough[:walkthrough.index("\n## ", 1)]
    assert _console_blocks(quick) == _console_blocks(walkthrough)
    assert len(_console_blocks(quick)) == 2
