"""FORCE_FRESH_VENV's pristine venv (worker/warm/venvs/pristine.py): one uv build per
dependency set shared by the worker processes of a host while one of them holds it, never
one left by worker processes that are gone, never one changed after its build (real uv
builds from local wheels, real flock leases, a real `dask worker --nworkers 2`)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from modelops_runtime.client import cluster_stats, submit
from modelops_runtime.errors import WorkerStopping
from modelops_runtime.models import SimTask
from modelops_runtime.worker.warm.venvs.pristine import host_prefix
from modelops_runtime.worker.warm.venvs.store import VenvCache, venv_key
from modelops_runtime.worker.warm.venvs.uv import UvAbort
from support.bundles import make_bundle
from support.cluster import tail, wait_for
from support.wheels import offline_uv_env, uv_offline, wheelhouse  # noqa: F401 - fixtures

REQS = ["tinylib==1.0"]

# a worker process that builds the pristine venv, says where, and holds it until killed
_HOLDS_A_PRISTINE_VENV = textwrap.dedent("""
    import sys
    from pathlib import Path
    from modelops_runtime.worker.warm.venvs.store import VenvCache

    venv = VenvCache(Path(sys.argv[1])).pristine(sys.argv[2:])
    print(venv.path, flush=True)
    sys.stdin.read()
""")


def _pristines(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(host_prefix()))


def _builder(root, *reqs):
    """A real process holding a pristine venv of ``reqs`` under ``root``: (popen, path)."""
    child = subprocess.Popen([sys.executable, "-c", _HOLDS_A_PRISTINE_VENV, str(root), *reqs],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    if not line:
        child.kill()
        _, err = child.communicate(timeout=60)
        pytest.fail(f"the builder process printed no venv: {err[-3000:]}")
    return child, root / os.path.basename(line)


def _kill(child) -> None:
    child.kill()
    child.communicate(timeout=60)


def test_a_pristine_venv_is_shared_while_a_worker_process_holds_it(tmp_path, uv_offline):
    """Worker processes of a host whose lifetimes overlap share one uv build; the last one
    out removes it, also when the builder was killed first."""
    root = tmp_path / "venvs"
    child, built = _builder(root, *REQS)
    try:
        cache = VenvCache(root)  # a sibling starting now: the build is held, not swept
        venv = cache.pristine(REQS)
        assert venv.path == built and cache.pristines.built == 0
        assert (venv.path / "bin" / "python").exists()
        os.close(venv.lease)
    finally:
        _kill(child)  # SIGKILL: the builder cannot remove anything
    assert built.is_dir(), "the pristine venv went while a worker process holds it"
    cache.pristines.close()
    assert _pristines(root) == [], "the last worker process left its pristine venv"


def test_a_pristine_venv_nobody_holds_is_never_used_again(tmp_path, uv_offline):
    """Never used by a task before the worker processes sharing it started: one left by
    worker processes that are gone (killed, nothing removed) is removed and built anew,
    whether a worker process finds it when it starts or when it needs it."""
    root = tmp_path / "venvs"
    cache = VenvCache(root)  # started before the leftover exists
    child, left = _builder(root, *REQS)
    _kill(child)
    venv = cache.pristine(REQS)
    os.close(venv.lease)
    assert venv.path != left and not left.exists() and cache.pristines.built == 1
    assert _pristines(root) == [venv.path.name]

    child, left = _builder(root, *REQS)  # holds it along with `cache`: the same build
    assert left == venv.path
    _kill(child)
    cache.pristines.close()
    child, left = _builder(root, *REQS)
    _kill(child)
    VenvCache(root)  # a worker process starting on this host
    assert _pristines(root) == []


def test_a_pristine_venv_changed_after_its_build_is_not_shared(tmp_path, uv_offline, caplog):
    """A pristine venv whose installed files changed (as a `pip install` into it would) is
    not joined: the next worker process builds its own, as uv builds it."""
    caplog.set_level(logging.WARNING, "modelops_runtime.venvs")
    root = tmp_path / "venvs"
    child, built = _builder(root, *REQS)
    try:
        (module,) = built.glob("lib/python*/site-packages/tinylib/__init__.py")
        os.chmod(module.parent, 0o755)  # replaced, as pip does (the file is uv's cache's)
        planted = module.with_suffix(".new")
        planted.write_text(module.read_text() + "VERSION = 'planted'\n")
        os.replace(planted, module)
        cache = VenvCache(root)
        venv = cache.pristine(REQS)
        os.close(venv.lease)
        assert venv.path != built and cache.pristines.built == 1
        (mine,) = venv.path.glob("lib/python*/site-packages/tinylib/__init__.py")
        assert "planted" not in mine.read_text()
        assert any("is not shared: its installed distributions changed" in r.getMessage()
                   for r in caplog.records)
    finally:
        _kill(child)
    cache.pristines.close()
    VenvCache(root)
    assert _pristines(root) == []


def test_waiting_for_a_siblings_build_ends_when_the_worker_stops(tmp_path, uv_offline):
    """A worker process waiting for another one's build of the set (the host lock) is
    stopped like one building: WorkerStopping, nothing left behind."""
    root = tmp_path / "venvs"
    cache = VenvCache(root)
    lock = root / ".locks" / f"{host_prefix()}{venv_key(REQS)}.lock"
    abort, errors = UvAbort(), []
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a sibling building
        waiter = threading.Thread(target=lambda: _catch(errors, cache.pristine, REQS, abort))
        waiter.start()
        abort.abort()
        waiter.join(60)
        assert not waiter.is_alive(), "the wait for the host lock did not end on abort"
    assert len(errors) == 1 and isinstance(errors[0], WorkerStopping), errors
    assert _pristines(root) == [] and cache.pristines.paths() == []


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed to the test thread
        errors.append(exc)


MODEL = '''
import os, sys

def where(params, seed):
    import tinylib
    return {"prefix": sys.prefix, "tinylib": tinylib.VERSION, "template": os.getppid()}
'''


def test_the_worker_processes_of_a_pod_run_tasks_in_one_uv_build(
        dask_cluster, tmp_path, wheelhouse):  # noqa: F811 - fixture
    """`dask worker --nworkers 2` in diagnose-fresh-venv: uv runs once, both worker
    processes' templates fork every task in that build, and their shutdown (SIGTERM, as a
    pod is stopped) leaves no venv."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path / "src", repo, {"model.py": MODEL,
                                                "requirements.txt": "tinylib==1.0\n"},
                      name="where")
    env = {"MODELOPS_BUNDLE_REPO": str(repo), "MODELOPS_FORCE_FRESH_VENV": "true",
           **offline_uv_env(wheelhouse)}
    cluster, client = dask_cluster(env, nworkers=2)
    results = []
    for n, address in enumerate(sorted(client.scheduler_info()["workers"])):
        tasks = [SimTask(bundle=ref, entrypoint="model:where", seed=s) for s in range(4)]
        futures = submit(client, tasks, study=f"pristine{n}", workers=[address],
                         allow_other_workers=False)
        results += [f.result(timeout=300) for f in futures]
    assert {r.outputs["tinylib"] for r in results} == {"1.0"}
    assert len({r.outputs["template"] for r in results}) == 2  # one per worker process
    (prefix,) = {r.outputs["prefix"] for r in results}
    assert os.path.basename(prefix).startswith(host_prefix())
    assert cluster_stats(client).total.venv_builds == 1

    client.close(timeout=10)
    (worker,) = cluster.workers
    os.kill(worker.popen.pid, signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "`dask worker` to exit on SIGTERM",
             on_fail=lambda: tail(worker.log))
    assert not os.path.exists(prefix), tail(worker.log)
    assert _pristines(cluster.root / "venvs") == []
