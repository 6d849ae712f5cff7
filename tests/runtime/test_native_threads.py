"""MODELOPS_NATIVE_THREADS (chart: worker.executor.nativeThreads) reaches the code of a
task in both executors, and every result names the package set it ran with.

The observable is what a native library reads when it is loaded: the thread-count
variables in the task's own environment (OpenBLAS, MKL, OpenMP, NumExpr, Numba read them
once, at load; the bundle loads them inside the task)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelops_runtime.client import gather_study, package_sets, submit
from modelops_runtime.models import SimTask
from modelops_runtime.worker.native import THREAD_VARS
from support.bundles import make_bundle
from support.wheels import offline_uv_env, wheelhouse  # noqa: F401 - fixture

MODEL = '''
import os

VARS = %r

def threads(params, seed):
    import tinylib
    return {"env": {v: os.environ.get(v) for v in VARS}, "tinylib": tinylib.VERSION}
''' % (THREAD_VARS,)


def _run(client, ref, n=4):
    tasks = [SimTask(bundle=ref, entrypoint="model:threads", seed=s) for s in range(n)]
    out = gather_study(client, submit(client, tasks, study="threads"), progress=False)
    assert out.ok, [f.message for f in out.failures]
    return out.results


@pytest.mark.parametrize("executor", ["isolated_warm", "direct"])
@pytest.mark.parametrize("threads", [None, 3])
def test_native_threads_reach_the_task_and_results_name_their_packages(
        dask_cluster, tmp_path, wheelhouse, executor, threads):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": "tinylib==1.0\n"})
    env = {"MODELOPS_BUNDLE_REPO": str(repo), "MODELOPS_EXECUTOR_TYPE": executor,
           **offline_uv_env(wheelhouse)}
    if threads is not None:
        env["MODELOPS_NATIVE_THREADS"] = str(threads)
    if executor == "direct":   # the worker's own environment must hold tinylib
        site = tmp_path / "site"
        subprocess.run([str(Path(sys.executable).parent / "uv"), "pip",
                        "install", "--quiet", "--python", sys.executable, "--target",
                        str(site), "tinylib==1.0"],
                       env={**os.environ, **offline_uv_env(wheelhouse),
                            "UV_CACHE_DIR": str(tmp_path / "uv-cache")},
                       check=True, capture_output=True, timeout=120)
        env["PYTHONPATH"] = str(site)
    _, client = dask_cluster(env=env, nworkers=1, nthreads=2)
    results = _run(client, ref)
    expected = str(threads or 1)
    for r in results:
        assert r.outputs["env"] == dict.fromkeys(THREAD_VARS, expected), (executor, r.outputs)
    # the package set: one digest, its full list collected once from the workers
    digests = {r.env_digest for r in results}
    assert len(digests) == 1 and "" not in digests, digests
    sets = package_sets(client)
    assert set(sets) == digests
    assert "tinylib==1.0" in sets[digests.pop()]
