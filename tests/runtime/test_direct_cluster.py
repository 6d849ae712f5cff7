"""DirectExecEnv on real `dask scheduler` + `dask worker --preload modelops_runtime.preload`."""

from __future__ import annotations

import tarfile

import pytest

from modelops_runtime.client import aggregate, gather_study, submit, task_key
from modelops_runtime.errors import (BundleDigestMismatch, BundleError, BundleNotFound,
                                     EntrypointError, MissingDependencyError, SimulationError,
                                     UnsafeBundle)
from modelops_runtime.models import SimTask
from support.bundles import (COUNTER_MODEL, MISSING_INSIDE, SIM_MODEL, archive_path,
                             make_bundle, store_raw_archive)
from support.cluster import direct_env


def test_study_of_200_sims_and_one_aggregation(dask_cluster, tmp_path):
    """2 worker processes x 2 threads: every sim succeeds, the aggregation runs where the
    aggregation resource is, and the startup log tells the user which executor runs."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL, "requirements.txt": ""})
    cluster, client = dask_cluster(direct_env(repo), nworkers=2, nthreads=2, resources="")
    # the only worker that offers the aggregation resource
    agg_proc = cluster.start_worker(nworkers=1, nthreads=1, resources="aggregation=1",
                                    name="agg")
    cluster.wait_for_workers(client, 3)
    agg_addr = next(addr for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()
                    if w.get("resources", {}).get("aggregation"))

    tasks = [SimTask(bundle=ref, entrypoint="model:simulate", params={"x": 2.0}, seed=s)
             for s in range(200)]
    futures = submit(client, tasks, study="s200")
    study = gather_study(client, futures, progress=False)
    assert study.ok, study.failures[:3]
    assert [r.outputs["value"] for r in study.results] == [2.0 * s for s in range(200)]
    assert {r.executor for r in study.results} == {"direct"}
    assert all(r.venv_cache_hit is None for r in study.results)
    # every worker process ran tasks in its own pid and counted them
    assert len({r.pid for r in study.results}) >= 2
    assert all(r.worker for r in study.results)

    agg = aggregate(client, futures, ref, "model:total").result(timeout=120)
    assert agg.outputs == {"total": sum(2.0 * s for s in range(200)), "n": 200}
    assert agg.worker == agg_addr  # only the aggregation worker may run it

    for proc in cluster.workers:
        log = proc.log_text()
        assert "modelops runtime: executor=direct" in log, log[-3000:]
        assert "WARNING - modelops runtime: executor=direct runs bundle code" in log
    assert agg_proc.popen.poll() is None


def test_task_keys_unique_per_study_and_stable():
    ref = "sha256:" + "a" * 64
    t1 = SimTask(bundle=ref, entrypoint="m:f", params={"x": 1}, seed=1)
    t1_again = SimTask(bundle=ref, entrypoint="m:f", params={"x": 1}, seed=1)
    t2 = SimTask(bundle=ref, entrypoint="m:f", params={"x": 1}, seed=2)
    assert task_key(t1, "a") == task_key(t1_again, "a")
    assert task_key(t1, "a") != task_key(t2, "a")
    assert task_key(t1, "a") != task_key(t1, "b")
    with pytest.raises(ValueError, match="study name"):
        task_key(t1, "bad name/")


def test_module_state_is_fresh_for_every_task(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"counter.py": COUNTER_MODEL})
    _, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=2)
    tasks = [SimTask(bundle=ref, entrypoint="counter:bump", seed=s) for s in range(30)]
    study = gather_study(client, submit(client, tasks, study="counter"), progress=False)
    assert study.ok, study.failures[:3]
    assert [r.outputs["count"] for r in study.results] == [1] * 30
    # one process ran them all, and counted them
    assert len({r.pid for r in study.results}) == 1
    assert sorted(r.process_task_count for r in study.results) == list(range(1, 31))


def test_failures_are_typed_and_do_not_lose_successes(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {
        "model.py": SIM_MODEL,
        "broken.py": '''
            def boom(params, seed):
                raise ValueError(f"negative rate for seed {seed}")
        ''',
        "needs.py": '''
            def run(params, seed):
                import not_installed_pkg_xyz
                return {}
        ''',
        "needs_top.py": "import not_installed_pkg_xyz\n\ndef run(params, seed):\n    return {}\n",
        "requirements.txt": "not-installed-pkg-xyz==1.0\n",
    })
    _, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=2)
    tasks = [SimTask(bundle=ref, entrypoint="model:simulate", seed=1),
             SimTask(bundle=ref, entrypoint="broken:boom", seed=7),
             SimTask(bundle=ref, entrypoint="needs:run", seed=1),
             SimTask(bundle=ref, entrypoint="model:nope", seed=1),
             SimTask(bundle=ref, entrypoint="nomodule:f", seed=1),
             SimTask(bundle=ref, entrypoint="model:simulate", seed=2),
             SimTask(bundle=ref, entrypoint="needs_top:run", seed=1)]
    study = gather_study(client, submit(client, tasks, study="mixed"), progress=False)
    assert study.indices == [0, 5]
    assert [r.outputs["value"] for r in study.results] == [1.0, 2.0]
    by_index = {f.index: f.error for f in study.failures}
    assert sorted(by_index) == [1, 2, 3, 4, 6]
    assert isinstance(by_index[6], MissingDependencyError)
    assert by_index[6].module == "not_installed_pkg_xyz"

    sim = by_index[1]
    assert isinstance(sim, SimulationError)
    assert sim.remote_type == "ValueError"
    assert sim.remote_message == "negative rate for seed 7"
    assert 'broken.py", line 2, in boom' in sim.remote_traceback

    dep = by_index[2]
    assert isinstance(dep, MissingDependencyError)
    assert dep.module == "not_installed_pkg_xyz"
    assert "not-installed-pkg-xyz==1.0" in str(dep)
    assert "worker's environment" in str(dep) and "isolated_warm" in str(dep)

    assert isinstance(by_index[3], EntrypointError)
    assert "has no function 'nope'" in str(by_index[3])
    assert isinstance(by_index[4], EntrypointError)
    assert "module 'nomodule' is not in bundle" in str(by_index[4])

    # the worker keeps serving the next task
    nxt = submit(client, [SimTask(bundle=ref, entrypoint="model:simulate", seed=3)], study="next")
    assert nxt[0].result(timeout=60).outputs["value"] == 3.0


def test_threads_never_mix_bundles_with_same_module_names(dask_cluster, tmp_path):
    """Two bundles both named `model`, run interleaved on 4 threads of one process: each
    task sees its own bundle's code (direct serialises calls and drops bundle modules)."""
    repo = tmp_path / "repo"
    refs = {tag: make_bundle(tmp_path, repo, {"model.py": f'''
        import time
        TAG = {tag!r}
        def which(params, seed):
            time.sleep(0.001)
            return {{"tag": TAG}}
    '''}, name=tag) for tag in ("alpha", "beta")}
    _, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=4)
    tasks = [SimTask(bundle=refs["alpha" if s % 2 else "beta"], entrypoint="model:which", seed=s)
             for s in range(60)]
    study = gather_study(client, submit(client, tasks, study="mix"), progress=False)
    assert study.ok, study.failures[:3]
    assert [r.outputs["tag"] for r in study.results] == [
        "alpha" if s % 2 else "beta" for s in range(60)]


def test_bad_bundles_fail_typed_and_the_worker_keeps_serving(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    good = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL}, name="good")
    other = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL + "\nX = 1\n"}, name="other")
    swapped = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL + "\nX = 2\n"}, name="swapped")
    archive_path(repo, swapped).write_bytes(archive_path(repo, other).read_bytes())
    truncated = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL, "data.txt": "z" * 100_000},
                            name="truncated")
    blob = archive_path(repo, truncated).read_bytes()
    archive_path(repo, truncated).write_bytes(blob[: len(blob) // 2])
    evil = tarfile.TarInfo("../escape.py")
    evil.mode = 0o644
    traversal = store_raw_archive(repo, [(evil, b"X = 1\n")])
    unknown = "sha256:" + "f" * 64

    cluster, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=2)
    tasks = [SimTask(bundle=ref, entrypoint="model:simulate", seed=1)
             for ref in (swapped, truncated, traversal, unknown, good)]
    study = gather_study(client, submit(client, tasks, study="bad"), progress=False)
    errors = {f.index: f.error for f in study.failures}
    assert sorted(errors) == [0, 1, 2, 3]
    assert isinstance(errors[0], BundleDigestMismatch)
    assert type(errors[1]) is BundleError and "truncated or corrupt" in str(errors[1])
    assert isinstance(errors[2], UnsafeBundle) and errors[2].entry == "../escape.py"
    assert isinstance(errors[3], BundleNotFound)
    assert study.indices == [4]
    # nothing half-built was left in the worker's bundle cache, and it keeps serving
    cache = cluster.root / "bundles"
    assert sorted(p.name for p in cache.iterdir()
                  if p.name not in (".locks", ".manifests", ".bytecode")) == [good[7:]]
    assert not (cluster.root / "escape.py").exists() and not (cache / "escape.py").exists()
    nxt = submit(client, [SimTask(bundle=good, entrypoint="model:simulate", seed=5)], study="ok")
    assert nxt[0].result(timeout=60).outputs["value"] == 5.0


def test_exits_and_modules_missing_from_the_bundle_are_typed(dask_cluster, tmp_path):
    """sys.exit() and KeyboardInterrupt fail their task as SimulationError (as under
    isolated_warm) and the worker goes on; a module missing from the bundle itself is a
    BundleError naming it, not a dependency to install."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {
        "model.py": SIM_MODEL,
        "quits.py": '''
            import sys
            def exit3(params, seed):
                sys.exit(3)
            def interrupt(params, seed):
                raise KeyboardInterrupt("stop right there")
        ''',
        "exit_on_import.py": "import sys\nsys.exit('no config')\n\ndef run(params, seed):\n"
                             "    return {}\n",
        **MISSING_INSIDE,
    })
    _, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=1)
    entrypoints = ["model:simulate", "quits:exit3", "quits:interrupt", "exit_on_import:run",
                   "sir.model:run", "sir.lazy:run", "flat:run", "own:run", "model:simulate"]
    tasks = [SimTask(bundle=ref, entrypoint=ep, seed=i) for i, ep in enumerate(entrypoints)]
    study = gather_study(client, submit(client, tasks, study="exits"), progress=False)
    assert study.indices == [0, 8]
    assert len({r.pid for r in study.results}) == 1  # the same worker process went on
    errors = {f.index: f.error for f in study.failures}

    for index, kind, text in [(1, "SystemExit", "SystemExit: 3"),
                              (2, "KeyboardInterrupt", "KeyboardInterrupt: stop right there"),
                              (3, "SystemExit", "SystemExit: no config")]:
        assert isinstance(errors[index], SimulationError), repr(errors[index])
        assert errors[index].remote_type == kind and text in str(errors[index])

    for index, missing, where in [(4, "sir.helpers", "sir/helpers.py"),
                                  (5, "sir.extra", "sir/extra.py"), (6, "util.io", "util/io.py")]:
        error = errors[index]
        assert isinstance(error, BundleError), repr(error)
        assert not isinstance(error, MissingDependencyError) and error.missing == missing
        assert f"imports {missing!r}, a module of the bundle itself" in str(error)
        assert f"Add {where} to the bundle" in str(error)
    assert isinstance(errors[7], MissingDependencyError) and errors[7].module == "my_helpers"
    assert "add my_helpers.py to the bundle directory" in str(errors[7])


def test_gathering_a_list_of_futures_into_a_log_writes_lines_not_redraws(dask_cluster,
                                                                          tmp_path, capfd):
    """gather_study(client, futures) with its progress on, and stderr not a terminal (a
    log file, CI): plain lines, no carriage-return redraws (issue #27: `make run > log`)."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL, "requirements.txt": ""})
    _, client = dask_cluster(direct_env(repo), nworkers=1, nthreads=2, resources="")
    futures = submit(client, [SimTask(bundle=ref, entrypoint="model:simulate",
                                      params={"x": 1.0}, seed=s) for s in range(40)],
                     study="log40")
    capfd.readouterr()
    assert gather_study(client, futures, progress=True, desc="log40").ok
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b[" not in err, repr(err[:300])
    assert err.splitlines()[-1].startswith("log40: 40 of 40 runs done (100.0 %), 0 failed"), err
