"""The README and the docs pages are the user's manual: what they say must be what the code does.

- covers: the landing README's opening, the MODELOPS_* table (docs/kubernetes.md), the
  ignored tool dirs, the tests docs/security.md names
- see also: test_docs_site.py (the site builds strictly), tests/e2e/test_readme_quickstart.py
  (the README's commands run)
"""

from __future__ import annotations

import re
import subprocess

from modelops_runtime.config import RuntimeConfig, env_table
from support.paths import REPO

README = (REPO / "README.md").read_text()
KUBERNETES = (REPO / "docs" / "kubernetes.md").read_text()
SECURITY = (REPO / "docs" / "security.md").read_text()


def _section(marker: str) -> str:
    m = re.search(rf"<!-- {marker}:start -->\n(.*?)<!-- {marker}:end -->", KUBERNETES, re.S)
    assert m, f"docs/kubernetes.md lacks the <!-- {marker}:start/end --> markers"
    return m.group(1).strip()


def test_readme_opens_with_the_two_commands():
    head = README[:1500]
    assert "make run" in head and "make test" in head


def test_readme_is_a_landing_page():
    """Under 10 KB, linking the docs pages; the rest lives in docs/."""
    assert len(README.encode()) < 10_000, len(README.encode())
    for page in ("studies", "modes", "diagnose", "kubernetes", "security", "contributing"):
        assert f"docs/{page}.md" in README, page


def test_env_table_matches_runtime_config():
    assert _section("env-table") == env_table(), (
        "docs/kubernetes.md's MODELOPS_* table is out of date; regenerate it from "
        "modelops_runtime.config.env_table()")
    for name in RuntimeConfig.env_names():
        assert name in KUBERNETES


def test_tool_and_venv_dirs_are_ignored(tmp_path):
    # in a scratch repository with the same .gitignore: in a git worktree whose .tools is a
    # symbolic link, git refuses to look "beyond" it
    (tmp_path / ".gitignore").write_text((REPO / ".gitignore").read_text())
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = subprocess.run(["git", "check-ignore", ".venv/x", ".tools/bin/helm", ".state/x",
                          ".venv", ".tools"], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split() == [".venv/x", ".tools/bin/helm", ".state/x", ".venv",
                                  ".tools"], out


def test_every_test_the_security_section_names_exists():
    """docs/security.md backs each claim with a test: those tests must exist."""
    section = SECURITY
    named = set(re.findall(r"`(?:(\w+\.py)::)?(test_\w+)`", section))
    named |= {("", n) for n in re.findall(r"::(test_\w+)", section)}
    files = set(re.findall(r"`(test_\w+\.py)", section))
    sources = {p.name: p.read_text() for p in (REPO / "tests" / "runtime").glob("test_*.py")}
    assert files and files <= set(sources), files - set(sources)
    every = "\n".join(sources.values())
    missing = [name for _, name in named if f"def {name}(" not in every]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
