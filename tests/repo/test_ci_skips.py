"""Under CI=true a skipped test fails with its reason; elsewhere it skips with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.paths import REPO


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", suite / "conftest.py")
    shutil.copytree(REPO / "tests" / "support", suite / "support")
    (suite / "test_needs_podman.py").write_text(
        "import pytest\n\ndef test_needs_podman():\n    pytest.skip('no podman on this machine')\n"
    )
    env = {**os.environ, "CI": ci}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(suite),
         "-c", os.devnull, str(suite)],
        cwd=suite, env=env, capture_output=True, text=True, timeout=120,
    )


def test_skip_is_a_failure_under_ci(tmp_path):
    result = _run(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "skipped under CI=true, which must run every test" in result.stdout
    assert "no podman on this machine" in result.stdout


def test_skip_is_one_line_elsewhere(tmp_path):
    result = _run(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
