"""Every preset as a real local cluster from the rendered chart: 50 sims + an aggregation.

What a user would check: the cluster has the preset's processes × threads, the results say
they ran the preset's way (executor, process reuse, venvs), every mode gives exactly the
same numbers, and nothing is left running afterwards.
"""

from __future__ import annotations

import json

import pytest

from e2e_support import PRESETS, STUDY, assert_nothing_left, preset

SIMS = 50
FIRST_SEED = 100   # sir_study/study.yaml


def run_preset(local_cli, local_env, worker_image_site, tmp_path, name: str, *,
               state=None, sims: int = SIMS, extra=(), rc: int = 0):
    p = preset(name)
    results = tmp_path / f"{name}.json"
    run = local_cli.run(
        ["-f", p.file, "--study", STUDY, "--sims", sims, "--results", results,
         "--state-dir", state or tmp_path / "state", "--no-progress", *extra],
        local_env(direct=p.executor == "direct", site=worker_image_site))
    assert run.popen.returncode == rc, run.output
    return p, run, json.loads(results.read_text())


def check_outputs(data, reference, sims: int) -> None:
    seeds = [s["seed"] for s in data["sims"]]
    assert seeds == list(range(FIRST_SEED, FIRST_SEED + sims)), "results missing or reordered"
    for s in data["sims"]:
        assert s["result"]["outputs"] == reference(s["seed"]), (
            f"seed {s['seed']} gave a different result than the model run directly")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_the_study_the_presets_way(name, local_cli, local_env, worker_image_site,
                                               reference, tmp_path):
    p, run, data = run_preset(local_cli, local_env, worker_image_site, tmp_path, name)

    # the mode and the cluster shape the values file asks for
    assert f"mode: executor={p.executor} " in run.stdout
    assert "dashboard: http://127.0.0.1:" in run.stdout
    assert len(data["nthreads"]) == p.worker_processes
    assert sum(data["nthreads"].values()) == p.worker_processes * p.threads

    # every sim, the same numbers as the model run directly, and the aggregate over all
    check_outputs(data, reference, SIMS)
    agg = data["aggregate"]
    assert agg["outputs"]["sims"] == SIMS and agg["outputs"]["sirsteps"] == ["1.0"]
    assert "peak_mean" in run.stdout and "elapsed" in run.stdout and "pool stats" in run.stdout
    # the batch plan, from a probe of one task of two runs per worker thread
    slots = p.worker_processes * p.threads
    assert f"run(s) per Dask task (probe {slots} task(s) of 2 run(s); " in run.stdout
    assert data["batch_plan"] in run.stdout

    results = [s["result"] for s in data["sims"]] + [agg]
    assert {r["executor"] for r in results} == {p.executor}
    pids = [s["result"]["pid"] for s in data["sims"]]
    worker_pids = set(data["worker_pids"].values())
    if p.executor == "direct":
        # runs in the Dask worker processes themselves
        assert set(pids) <= worker_pids
        assert all(r["venv_cache_hit"] is None for r in results)
    else:
        # runs in warm child processes, never in a Dask worker process
        assert not set(pids) & worker_pids
        counts = [s["result"]["process_task_count"] for s in data["sims"]]
        if p.max_process_reuse == 1:
            assert counts == [1] * SIMS and len(set(pids)) == SIMS, \
                "a fresh-process preset ran two tasks in one process"
        elif not p.force_fresh_venv:
            assert max(counts) > 1 and len(set(pids)) < SIMS, "warm processes were not reused"
        if p.force_fresh_venv:
            assert all(r["venv_cache_hit"] is False for r in results), \
                "a task reused a cached venv although every task must get a fresh one"
            # a venv of its own per sim: clones of one uv build per worker process
            assert data["pool_stats"]["pool"]["venv_misses"] >= SIMS
            assert data["pool_stats"]["pool"]["venv_builds"] <= p.worker_processes
    assert_nothing_left(run)
    assert not list((tmp_path / "state" / "runs").glob("*/tmp")), "run scratch left behind"
    # the workers cleaned up after themselves: local mode stops `dask worker` as Kubernetes
    # stops a container (SIGTERM to it alone), not its whole process group at once
    assert not list((tmp_path / "state").glob("volumes/*/venvs/.fresh-*")), \
        "fresh venvs (or their pristine venv) left by the workers"


def test_switching_presets_shows_the_new_mode(local_cli, local_env, worker_image_site,
                                              reference, tmp_path):
    """What `helm upgrade -f <other preset>` does on a cluster: the same study, same state
    (bundle repo, caches), the second run in the second mode; --compare checks the second
    run's outputs seed by seed against the first's."""
    state = tmp_path / "state"
    first, run1, data1 = run_preset(local_cli, local_env, worker_image_site, tmp_path,
                                    "debug-isolated", state=state, sims=12)
    # a baseline with one seed tampered with: the comparison must name exactly that seed
    baseline = json.loads((tmp_path / "debug-isolated.json").read_text())
    baseline["sims"][5]["result"]["outputs"]["peak_infected"] += 1
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    second, run2, data2 = run_preset(local_cli, local_env, worker_image_site, tmp_path,
                                     "prod-warm", state=state, sims=12, rc=3,
                                     extra=["--compare", tmp_path / "baseline.json"])
    assert f"compare: 1 of 12 seeds give different outputs than {tmp_path / 'baseline.json'} " \
           f"(seeds {FIRST_SEED + 5})" in run2.stdout, run2.output
    assert first.executor != second.executor
    assert f"mode: executor={second.executor} " in run2.stdout
    assert f"executor={first.executor} " not in run2.stdout
    assert {s["result"]["executor"] for s in data2["sims"]} == {second.executor}
    assert sum(data2["nthreads"].values()) == second.worker_processes * second.threads
    assert data1["bundle"] == data2["bundle"]
    check_outputs(data1, reference, 12)
    check_outputs(data2, reference, 12)
    assert_nothing_left(run1)
    assert_nothing_left(run2)


@pytest.mark.parametrize("batch, tasks", [("1", 12), ("5", 3)])
def test_batch_sets_the_runs_per_dask_task(batch, tasks, local_cli, local_env,
                                           worker_image_site, reference, tmp_path):
    """`--batch N`: N runs per Dask task (1: never grouped), every run still its own
    result."""
    p, run, data = run_preset(local_cli, local_env, worker_image_site, tmp_path, "prod-warm",
                              sims=12, extra=("--batch", batch))
    check_outputs(data, reference, 12)
    assert data["dask_tasks"] == tasks
    assert "sims: 12 ok, 0 failed; elapsed " in run.stdout
    assert f"; {tasks} Dask task(s)" in run.stdout
    assert f"batch plan: {batch} run(s) per Dask task (given" in run.stdout
