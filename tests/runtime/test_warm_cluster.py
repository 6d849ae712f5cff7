"""isolated_warm end to end: real `dask scheduler` + `dask worker --preload
modelops_runtime.preload` processes, real uv venvs built from local wheels (no network),
real crashes and signals. Stats are read the way a user reads them: cluster_stats(client).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from modelops_runtime.client import cluster_stats, gather_study, submit
from modelops_runtime.errors import (EnvironmentBuildError, MemoryLimitExceeded,
                                     ProcessCrashed, SimulationError, TaskTimeout)
from modelops_runtime.models import SimTask
from modelops_runtime.worker.warm.venvs.store import FINGERPRINT
from support.bundles import make_bundle
from support.cluster import tail, wait_for
from support.index import HeldIndex
from support.wheels import offline_uv_env, wheelhouse  # noqa: F401 - fixture

MODEL = '''
import ctypes, hashlib, os, signal, time
from pathlib import Path

COUNT = 0

def count(params, seed):
    global COUNT
    COUNT += 1
    return {"count": COUNT, "pid": os.getpid()}

def sim(params, seed):
    return {"value": params["x"] * seed, "pid": os.getpid()}

def versions(params, seed):
    import tinylib
    return {"tinylib": tinylib.VERSION, "seed": seed, "pid": os.getpid()}

def fail(params, seed):
    raise RuntimeError("model failed on purpose")

def segfault(params, seed):
    print("about to segfault", flush=True)
    ctypes.string_at(0)

def exit3(params, seed):
    print("leaving with os._exit(3)", flush=True)
    os._exit(3)

def sigkill(params, seed):
    os.kill(os.getpid(), signal.SIGKILL)

def hog(params, seed):
    blocks = []
    for _ in range(100):  # at most 1 GB if the limit were not enforced
        blocks.append(b"h" * (10 << 20))
        time.sleep(0.005)
    return {"held": len(blocks)}

def sleep(params, seed):
    if "started" in params:
        Path(params["started"]).touch()
    time.sleep(params.get("seconds", 60))
    return {}

def big(params, seed):
    print("p" * (1 << 20))  # 1 MB of user output per task
    data = os.urandom(1 << 20) * 50  # 50 MB back
    return {"blob": data, "sha": hashlib.sha256(data).hexdigest()}
'''

_studies = itertools.count()
MiB = 1 << 20


def _env(repo, wheelhouse, **settings):  # noqa: F811 - fixture value
    scratch = repo.parent / "tmp"  # the workers' TMPDIR: warm processes' working dirs
    scratch.mkdir(exist_ok=True)
    env = {"MODELOPS_BUNDLE_REPO": str(repo), "TMPDIR": str(scratch),
           # the models write their "started" marks here (warm processes are sandboxed)
           "MODELOPS_WARM_WRITABLE_PATHS": str(repo.parent),
           **offline_uv_env(wheelhouse)}
    env.update({f"MODELOPS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _bundle(tmp_path, name, requirements=""):
    return make_bundle(tmp_path / "src", tmp_path / "repo",
                       {"model.py": MODEL, "requirements.txt": requirements}, name=name)


def _tasks(ref, fn, seeds, **params):
    return [SimTask(bundle=ref, entrypoint=f"model:{fn}", params=params, seed=s) for s in seeds]


def run_all(client, ref, fn, seeds, params=None, **kwargs):
    """Submit one task per seed (a new study each time, so keys never repeat) → SimResults."""
    futures = submit(client, _tasks(ref, fn, seeds, **(params or {})),
                     study=f"warm{next(_studies)}", **kwargs)
    study = gather_study(client, futures, progress=False)
    assert study.ok, [f.message for f in study.failures[:3]]
    return study.results


def run_one(client, ref, fn, seed=0, params=None, **kwargs):
    (future,) = submit(client, _tasks(ref, fn, [seed], **(params or {})),
                       study=f"warm{next(_studies)}", **kwargs)
    return future.result(timeout=300)


def _published(venvs: Path) -> list[Path]:
    """The published venvs: ``<key>`` links to their current generation ``<key>@<id>``."""
    return [p for p in venvs.iterdir() if not p.name.startswith(".") and p.is_symlink()]


def _addresses(client) -> dict[str, str]:
    """Worker name → address."""
    return {w["name"]: addr for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def _warm_procs(cluster, procs) -> set[psutil.Process]:
    """Warm processes (the runner) alive in the cluster's process trees."""
    out = set()
    for proc in procs.running(cluster.tree_pids()):
        try:
            if any(arg.endswith("modelops_runtime/worker/warm/runner/main.py")  # or its compiled copy
                   or Path(arg).parent.name.startswith("modelops-runner-")
                   for arg in proc.cmdline()):
                out.add(proc)
        except psutil.Error:
            pass
    return out


def _warm_pids(cluster, procs) -> set[int]:
    return {p.pid for p in _warm_procs(cluster, procs)}


def test_module_state_carried_over_with_reuse_never_with_reuse_1(dask_cluster, tmp_path,
                                                                  wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "counter")
    cluster, client = dask_cluster(_env(repo, wheelhouse), nthreads=1)
    cluster.start_worker(nthreads=1, env={"MODELOPS_MAX_PROCESS_REUSE": "1"}, name="fresh")
    cluster.wait_for_workers(client, 2)
    names = _addresses(client)

    warm = run_all(client, ref, "count", range(10), workers=[names["w0"]])
    assert sorted(r.outputs["count"] for r in warm) == list(range(1, 11))
    assert len({r.pid for r in warm}) == 1

    fresh = run_all(client, ref, "count", range(10), workers=[names["fresh"]])
    assert [r.outputs["count"] for r in fresh] == [1] * 10
    assert len({r.pid for r in fresh}) == 10
    assert all(r.process_task_count == 1 for r in fresh)

    stats = cluster_stats(client)
    assert stats.total.venv_builds == 1  # one pod-wide venv, shared by both workers
    assert stats.workers[names["fresh"]].spawns == 10 + 1  # 10 forked from 1 template
    assert stats.workers[names["fresh"]].removals.reuse == 10
    assert stats.workers[names["w0"]].reuses == 9


def test_each_fault_is_typed_counted_and_the_next_task_succeeds(dask_cluster, tmp_path, procs,
                                                                 wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "faults")
    bystander_ref = _bundle(tmp_path, "bystander", requirements="tinylib==1.0\n")
    limit = 200 * MiB
    cluster, client = dask_cluster(
        _env(repo, wheelhouse, mem_limit_bytes="200Mi", task_timeout=6), nthreads=1)
    (worker_pid,) = client.run(os.getpid).values()
    bystander = run_one(client, bystander_ref, "versions").pid
    pid = run_one(client, ref, "count").pid
    proc = procs.track(pid)

    def removals():
        return cluster_stats(client).total.removals.model_dump()

    cases = [
        ("fail", SimulationError, None,
         lambda e: e.remote_type == "RuntimeError" and "on purpose" in str(e)),
        ("segfault", ProcessCrashed, "crash",
         lambda e: e.signal_name == "SIGSEGV" and "about to segfault" in e.log_tail
         and "Segmentation fault" in e.log_tail),
        ("exit3", ProcessCrashed, "crash",
         lambda e: e.exit_code == 3 and "leaving with os._exit(3)" in e.log_tail),
        ("sigkill", ProcessCrashed, "crash", lambda e: e.signal_name == "SIGKILL"),
        ("hog", MemoryLimitExceeded, "mem_limit",
         lambda e: e.limit_bytes == limit and e.peak_bytes > limit),
        ("sleep", TaskTimeout, "timeout", lambda e: e.timeout_s == 6),
    ]
    for fn, error, reason, check in cases:
        before = removals()
        with pytest.raises(error) as err:
            run_one(client, ref, fn)
        assert check(err.value), (fn, str(err.value))
        after_task = run_one(client, ref, "count")  # the same worker goes on
        after = removals()
        if reason is None:  # user exception: the process stays warm
            assert after_task.pid == pid and after == before
        else:
            assert after_task.pid != pid and after_task.outputs["count"] == 1
            assert not procs.alive(proc)
            assert after[reason] == before[reason] + 1, (fn, before, after)
            assert sum(after.values()) == sum(before.values()) + 1
        pid = after_task.pid
        proc = procs.track(pid)

    # an idle process killed from outside: replaced before a task is sent to it
    proc.kill()
    procs.wait_gone([proc], 30)
    replaced = run_one(client, ref, "count")
    assert replaced.pid != pid and replaced.outputs["count"] == 1
    assert removals()["crash"] == 4

    # a dependency that cannot be installed: typed, carries uv's words, nothing kept
    broken = _bundle(tmp_path, "broken", requirements="nosuchpkg==1.0\n")
    with pytest.raises(EnvironmentBuildError, match="nosuchpkg") as err:
        run_one(client, broken, "count")
    assert "nosuchpkg" in err.value.uv_output
    venvs = cluster.root / "venvs"
    assert not [p.name for p in venvs.iterdir() if p.name.startswith(".tmp")]

    # other processes and the worker itself were untouched throughout
    assert run_one(client, ref, "count").pid == replaced.pid
    assert run_one(client, bystander_ref, "versions").pid == bystander
    assert list(client.run(os.getpid).values()) == [worker_pid]
    assert _warm_pids(cluster, procs) == {bystander, replaced.pid}


def test_16_threads_at_once_on_a_new_bundle_build_one_venv(dask_cluster, tmp_path, procs,
                                                          wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "deps", requirements="tinydep\n")
    cluster, client = dask_cluster(_env(repo, wheelhouse), nworkers=4, nthreads=4)
    results = run_all(client, ref, "versions", range(64))
    assert sorted(r.outputs["seed"] for r in results) == list(range(64))
    assert {r.outputs["tinylib"] for r in results} == {"2.0"}  # newest in the wheelhouse
    assert len({r.worker for r in results}) >= 2

    stats = cluster_stats(client)
    assert stats.total.workers == 4
    assert stats.total.venv_builds == 1 and stats.total.venv_misses == 1
    for address, per_worker in stats.workers.items():
        # one process per concurrent task at most, and no spawn lost or doubled
        assert per_worker.size <= 4 and per_worker.spawns == per_worker.size, address
        assert sum(per_worker.removals.model_dump().values()) == 0
    assert len(_warm_pids(cluster, procs)) == stats.total.size
    # the venv links the shared uv cache instead of copying packages
    venvs = _published(cluster.root / "venvs")
    assert len(venvs) == 1
    (installed,) = venvs[0].glob("lib/python*/site-packages/tinylib/__init__.py")
    assert installed.stat().st_nlink > 1


def test_venv_build_killed_half_way_is_rebuilt(dask_cluster, tmp_path,
                                               wheelhouse):  # noqa: F811
    # the only index uv asks: one on 127.0.0.1 that holds every request until released
    index = HeldIndex(wheelhouse)
    try:
        (tmp_path / "tmp").mkdir()
        env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"), "UV_INDEX_URL": index.url,
               "TMPDIR": str(tmp_path / "tmp")}
        ref = _bundle(tmp_path, "deps", requirements="tinylib==1.0\n")
        cluster, client = dask_cluster(env, nthreads=1)
        (worker_pid,) = client.run(os.getpid).values()
        (future,) = submit(client, _tasks(ref, "versions", [1]), study="killed_build")
        wait_for(lambda: index.paths, 120, "uv to ask the index for tinylib",
                 on_fail=cluster.logs)
        venvs = cluster.root / "venvs"
        assert [p for p in venvs.iterdir() if p.name.startswith(".tmp-")]  # half-built
        builders = psutil.Process(worker_pid).children(recursive=True)
        os.kill(worker_pid, signal.SIGKILL)  # the worker dies in the middle of the build
        for proc in builders:  # ...and so does its uv
            proc.kill()
        index.release.set()

        result = future.result(timeout=180)  # Dask reruns it on the restarted worker
        assert result.outputs["tinylib"] == "1.0" and result.venv_cache_hit is False
        stats = cluster_stats(client)
        assert stats.total.venv_builds == 1  # the new worker process built it again
        assert not [p.name for p in venvs.iterdir() if p.name.startswith(".tmp-")]
        (venv,) = _published(venvs)
        assert json.loads((venv / FINGERPRINT).read_text())["requirements"] == ["tinylib==1.0"]
    finally:
        index.close()


def test_tampered_fingerprint_is_rebuilt_when_validating(dask_cluster, tmp_path,
                                                         wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "deps", requirements="tinylib==1.0\n")
    # both workers share the venv cache (as in a pod); every task spawns a process
    cluster, client = dask_cluster(_env(repo, wheelhouse, max_process_reuse=1), nthreads=1)
    cluster.start_worker(nthreads=1, env={"MODELOPS_VALIDATE_DEPS": "false"}, name="trusting")
    cluster.wait_for_workers(client, 2)
    names = _addresses(client)
    first = run_one(client, ref, "versions", workers=[names["w0"]])
    assert first.outputs["tinylib"] == "1.0" and first.venv_cache_hit is False

    (venv,) = _published(cluster.root / "venvs")
    fingerprint = json.loads((venv / FINGERPRINT).read_text())
    fingerprint["requirements"] = ["tinylib==2.0"]
    (venv / FINGERPRINT).write_text(json.dumps(fingerprint))

    trusting = run_one(client, ref, "versions", seed=1, workers=[names["trusting"]])
    assert trusting.venv_cache_hit is True  # VALIDATE_DEPS=false: reused as it is

    rebuilt = run_one(client, ref, "versions", seed=2, workers=[names["w0"]])
    assert rebuilt.outputs["tinylib"] == "1.0" and rebuilt.venv_cache_hit is False
    stats = cluster_stats(client)
    assert stats.workers[names["w0"]].venv_builds == 2
    assert stats.workers[names["trusting"]].venv_builds == 0
    restored = json.loads((venv / FINGERPRINT).read_text())
    assert restored["requirements"] == ["tinylib==1.0"]
    wait_for(lambda: "fingerprint's requirements is ['tinylib==2.0']" in
             cluster.workers[0].log_text(), 30, "the worker to log why it rebuilt the venv")


def test_1000_tasks_on_4_threads_and_big_payloads(dask_cluster, tmp_path,
                                                  wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "sim")
    cluster, client = dask_cluster(_env(repo, wheelhouse), nthreads=4)
    results = run_all(client, ref, "sim", range(1000), params={"x": 2.0})
    assert sorted(r.outputs["value"] for r in results) == [2.0 * s for s in range(1000)]
    assert len({r.pid for r in results}) <= 4
    counts: dict[int, list[int]] = {}
    for r in results:  # each process counted its own tasks, each exactly once
        counts.setdefault(r.pid, []).append(r.process_task_count)
    for pid, seen in counts.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), pid

    big = run_all(client, ref, "big", range(2))
    for r in big:
        blob = r.outputs["blob"]
        assert len(blob) == 50 * MiB and hashlib.sha256(blob).hexdigest() == r.outputs["sha"]
    stats = cluster_stats(client)
    assert stats.total.tasks == 1002 and stats.total.spawns <= 4
    assert sum(stats.total.removals.model_dump().values()) == 0


def test_no_warm_process_survives_a_sigkilled_worker(dask_cluster, tmp_path, procs,
                                                     wheelhouse):  # noqa: F811
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "sim")
    cluster, client = dask_cluster(_env(repo, wheelhouse), nthreads=2)
    started = tmp_path / "started"
    (busy_future,) = submit(client, _tasks(ref, "sleep", [0], started=str(started)),
                            study="busy")
    wait_for(started.exists, 120, "the long task to start")
    idle = run_one(client, ref, "sim", params={"x": 1.0}).pid  # needs a second process
    warm = _warm_procs(cluster, procs)
    assert idle in {p.pid for p in warm} and len(warm) == 2  # one idle, one busy
    ((address, worker_pid),) = client.run(os.getpid).items()

    os.kill(worker_pid, signal.SIGKILL)
    busy_future.cancel()
    procs.wait_gone(warm, 30)
    # the nanny's new worker process serves tasks with new warm processes
    wait_for(lambda: set(_addresses(client).values()) - {address}, 120,
             "the nanny to restart the worker process", interval=0.2)
    after = run_one(client, ref, "sim", seed=3, params={"x": 1.0})
    assert after.outputs["value"] == 3.0 and after.pid not in {p.pid for p in warm}
    # the killed worker could not remove its warm processes' working dirs; the new worker
    # process removed them when it started (same host, dead pid): only its own one is left
    assert len(list((tmp_path / "tmp").glob("modelops-warm-*"))) == 1


@pytest.mark.parametrize("ahead", [0, 2])
def test_force_fresh_venv_leaves_no_venv_or_process(dask_cluster, tmp_path, procs,
                                                    wheelhouse, ahead):  # noqa: F811
    """With ``freshProcessFrom: exec`` (the plain reference; the template path forks every
    task from one venv built per worker process, tested in test_fresh_equivalence.py), every
    task gets a venv no task used before (a clone of one uv build); with venvs
    made ahead (the default 2) at most that many more are made, and the ones no task took,
    and the pristine venv, are removed by the worker's shutdown."""
    repo = tmp_path / "repo"
    ref = _bundle(tmp_path, "deps", requirements="tinylib==1.0\n")
    cluster, client = dask_cluster(
        _env(repo, wheelhouse, force_fresh_venv="true", fresh_venvs_ahead=ahead,
             fresh_process_from="exec"), nthreads=2)
    results = run_all(client, ref, "versions", range(20))
    assert {r.outputs["tinylib"] for r in results} == {"1.0"}
    assert len({r.pid for r in results}) == 20
    assert not any(r.venv_cache_hit for r in results)

    stats = cluster_stats(client).total
    # uv ran once (the pristine venv no task runs in); each task's venv is a clone of it
    assert stats.spawns == 20 and stats.venv_builds == 1, stats
    assert 20 <= stats.venv_misses <= 20 + ahead, stats
    assert stats.removals.fresh_venv == 20 and stats.size == 0
    if ahead == 0:  # only the pristine venv is left while the worker runs
        left = sorted(p.name for p in (cluster.root / "venvs").iterdir())
        assert len(left) == 2 and ".locks" in left and left[0].startswith(".fresh-"), left
    # each task's process is stopped by the pool's reaper once its result is back
    wait_for(lambda: not _warm_pids(cluster, procs), 60, "the fresh processes to be gone",
             on_fail=lambda: f"still running: {_warm_pids(cluster, procs)}")
    client.close(timeout=10)
    # as Kubernetes stops a pod: SIGTERM to the container's main process only. Venvs built
    # ahead and not taken (built or still building) are removed by the worker's own
    # shutdown, which waits for no build: nothing is left for the next worker to reap
    (worker,) = cluster.workers
    os.kill(worker.popen.pid, signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "`dask worker` to exit on SIGTERM",
             on_fail=lambda: tail(worker.log))
    assert "shutting down executor=isolated_warm" in worker.log_text()
    assert sorted(p.name for p in (cluster.root / "venvs").iterdir()) == [".locks"]
