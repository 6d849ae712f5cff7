"""The docs site builds in strict mode (never with -q: it hides the warnings strict counts):
a broken link or anchor, a page missing from
mkdocs.yml's nav, a nav entry without its page, each fails.

- covers: mkdocs.yml and docs/ (`mkdocs build --strict`), and that the check bites
- see also: test_readme.py (the generated tables on their pages)
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from support.paths import REPO


def _build(root, site) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(root / "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly(tmp_path):
    proc = _build(REPO, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "diagnose" / "index.html").is_file()


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: (d / "docs" / "orphan.md").write_text("# not in nav\n"), "orphan.md"),
    (lambda d: (d / "docs" / "studies.md").write_text(
        (d / "docs" / "studies.md").read_text() + "\n[gone](nowhere.md)\n"), "nowhere.md"),
    (lambda d: (d / "docs" / "studies.md").write_text(
        (d / "docs" / "studies.md").read_text() + "\n[gone](modes.md#no-such-heading)\n"),
     "no-such-heading"),
], ids=["page-missing-from-nav", "broken-link", "broken-anchor"])
def test_a_broken_site_fails(tmp_path, break_it, expected):
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    break_it(tmp_path)
    proc = _build(tmp_path, tmp_path / "site")
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr
