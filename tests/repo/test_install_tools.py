"""ci/install-tools.sh: pinned tools are reused, and a machine without Go is told what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ci" / "install-tools.sh"
TOOLS = REPO / ".tools" / "bin"


def _run(bin_dir: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(bin_dir)], capture_output=True, text=True,
                          env={**os.environ, "PATH": path}, timeout=120)


def test_second_run_builds_nothing():
    out = _run(TOOLS, os.environ["PATH"])
    assert out.returncode == 0, out.stderr
    assert "building" not in out.stdout, out.stdout
    for line in ("helm v3.22.0 already built", "helm4 v4.3.1 already built",
                 "ct v3.14.0 already built"):
        assert line in out.stdout


def test_without_go_or_helm_says_what_to_install(tmp_path):
    # a PATH with the shell utilities but neither Go nor any helm/ct
    path = "/usr/bin:/bin"
    assert not any(shutil.which(t, path=path) for t in ("go", "helm", "ct")), \
        "this test needs a PATH without go/helm/ct"
    out = _run(tmp_path / "bin", path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Go is not installed" in lines[0] and "install Go" in lines[0]
    assert not any((tmp_path / "bin").glob("helm*")), "nothing half-installed is left"
