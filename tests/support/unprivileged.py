"""How a test runs a worker as the pods run it: without privileges.

- covers: the command prefix and uid: the tests' own uid when that is not root; as root,
  ``setpriv`` makes it ``nobody``, or — when this interpreter lives where nobody cannot run
  it (e.g. a pyenv under /root) — root without a single capability (no CAP_DAC_OVERRIDE:
  mode bits hold, as for the chart's uid 10001).
- does not: start anything (support/cluster.py's ``start_worker(wrap=...)`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

NOBODY = 65534


def unprivileged_wrap() -> tuple[list[str], int]:
    """(command prefix, uid): how the worker runs without privileges (see the docstring)."""
    if os.geteuid() != 0:
        return [], os.geteuid()  # already unprivileged
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot start the worker "
                    "without privileges")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    # the same interpreter must start for nobody, also as a child (dask spawns processes)
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c",
         f"import sys, subprocess; assert sys.version_info[:3] == {tuple(sys.version_info[:3])}; "
         "subprocess.run([sys.executable, '-c', 'import modelops_runtime'], check=True)"],
        capture_output=True, timeout=120, cwd="/")
    if probe.returncode == 0:
        return as_nobody, NOBODY
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"], 0
