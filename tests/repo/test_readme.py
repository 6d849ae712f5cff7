"""The README is the user's manual: what it says must be what the code does."""

from __future__ import annotations

import re
import subprocess

from modelops_runtime.config import RuntimeConfig, env_table
from support.paths import REPO

README = (REPO / "README.md").read_text()


def _section(marker: str) -> str:
    m = re.search(rf"<!-- {marker}:start -->\n(.*?)<!-- {marker}:end -->", README, re.S)
    assert m, f"README.md lacks the <!-- {marker}:start/end --> markers"
    return m.group(1).strip()


def test_readme_opens_with_the_two_commands():
    head = README[:1500]
    assert "make run" in head and "make test" in head


def test_env_table_matches_runtime_config():
    assert _section("env-table") == env_table(), (
        "README's MODELOPS_* table is out of date; regenerate it from "
        "modelops_runtime.config.env_table()")
    for name in RuntimeConfig.env_names():
        assert name in README


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
    """README "Security" backs each claim with a test: those tests must exist."""
    start = README.index("## Security")
    section = README[start:README.index("\n## ", start + 1)]
    named = set(re.findall(r"`(?:(\w+\.py)::)?(test_\w+)`", section))
    named |= {("", n) for n in re.findall(r"::(test_\w+)", section)}
    files = set(re.findall(r"`(test_\w+\.py)", section))
    sources = {p.name: p.read_text() for p in (REPO / "tests" / "runtime").glob("test_*.py")}
    assert files and files <= set(sources), files - set(sources)
    every = "\n".join(sources.values())
    missing = [name for _, name in named if f"def {name}(" not in every]
    assert not missing, f"README Security names tests that do not exist: {missing}"
