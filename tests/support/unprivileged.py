"""How a test runs a worker as the pods run it: without privileges.

- covers: the command prefix and uid: the tests' own uid when that is not root; as root,
  ``setpriv`` makes it ``nobody``, or — when this interpreter lives where nobody cannot run
  it (e.g. a pyenv under /root) — root without a single capability (no CAP_DAC_OVERRIDE:
  mode bits hold, as for the chart's uid 10001).
- covers too: ``unprivileged_cluster``, a scheduler and one such `dask worker` with its
  caches and TMPDIR under a fresh directory of /tmp (the security and direct-bundle tests').
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

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


@contextlib.contextmanager
def unprivileged_cluster(prefix: str, env: Mapping[str, str], *, nthreads: int
                         ) -> Iterator[tuple[object, object, Path, int]]:
    """(cluster, client, root, uid): a scheduler and one `dask worker` (nanny + 1 worker
    process, ``nthreads`` threads) run as the pods run (:func:`unprivileged_wrap`), its
    bundle repo at ``root/repo`` and caches, TMPDIR and HOME under ``root`` (a new
    directory of /tmp, which nobody can reach), ``env`` on top; all removed on leaving."""
    from .cluster import ProcessCluster, base_env

    wrap, uid = unprivileged_wrap()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = client = None
    try:
        os.chmod(root, 0o755)
        for sub in ("tmp", "repo", "cache", "dask-worker-space-0"):
            (root / sub).mkdir()
        for sub in ("tmp", "cache", "dask-worker-space-0"):
            os.chown(root / sub, uid, uid)
        cluster = ProcessCluster(root=root, env=base_env(root / "cache", {
            "MODELOPS_BUNDLE_REPO": str(root / "repo"), "TMPDIR": str(root / "tmp"),
            "HOME": str(root / "tmp"), **env}))
        cluster.start_scheduler()
        cluster.start_worker(nworkers=1, nthreads=nthreads, wrap=wrap)
        client = cluster.client()
        cluster.wait_for_workers(client, 1)
        yield cluster, client, root, uid
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
