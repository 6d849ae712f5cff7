"""`make run > log` (issue #27): the log holds plain lines, a progress line now and then and
the report, never hundreds of progress-bar redraws.

- covers: the Makefile's `run` with stdout and stderr a file, as in CI or under nohup
- does not: reach an index: the example's numpy comes from the locked wheelhouse, offline
  (uv's own UV_* variables, which the workers pass on)
- see also: tests/runtime/test_progress.py (the lines themselves, on a fake clock)
"""

from __future__ import annotations

import os
import subprocess

from e2e_support import REPO

from support.wheelhouse import offline_env, real_wheels  # noqa: F401 - fixture


def test_make_run_into_a_log_has_lines_not_redraws(tmp_path, real_wheels):  # noqa: F811
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.run(["make", "--no-print-directory", "run", "SIMS=300"], cwd=REPO,
                              env={**os.environ, **offline_env(real_wheels)}, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b[" not in text, repr(text[:2000])
    progress = [line for line in text.splitlines() if " runs done (" in line]
    assert progress and progress[-1].startswith("sir-peak: 300 of 300 runs done"), text
    assert len(progress) <= 20, progress    # one every 30 s, and the last
    assert "sims: 300 ok, 0 failed" in text
