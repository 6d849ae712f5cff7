"""Batched submission of tiny runs (submit_study groups runs into Dask tasks), on a real
`dask scheduler` and `dask worker --preload modelops_runtime.preload` (executor direct):
each run keeps its own result and typed failure, exactly as unbatched, also when the
worker running a batch is killed mid-batch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study
from modelops_runtime.client.batching import (BATCH_TARGET, MAX_BATCH, RUN_FLOOR,
                                              per_run_estimate, plan_batches, quantise)
from support.bundles import make_bundle
from support.cluster import direct_env, wait_for
from support.wheels import build_wheel, offline_uv_env, wheelhouse  # noqa: F401 - fixture

MODEL = '''
import os, time
from pathlib import Path

def simulate(params, seed):
    if str(seed) in params.get("fail_seeds", "").split(","):
        raise ValueError(f"seed {seed} fails on purpose")
    flag = params.get("stall_flag")
    if flag and seed == params["stall_seed"] and not Path(flag).exists():
        Path(flag).write_text(str(os.getpid()))   # the worker process running this batch
        time.sleep(120)                             # ... until the test kills it
    return {"value": params["x"] * seed, "seed": seed}

def total(outputs):
    return {"total": sum(o["value"] for o in outputs), "n": len(outputs)}
'''


SLOW = '''

def slow(params, seed):  # ~1 ms of work
    deadline = time.perf_counter() + 0.001
    while time.perf_counter() < deadline:
        pass
    return {"seed": seed}
'''


def _plan(ref, name, sets, count):
    return StudyPlan(name=name, bundle=ref, entrypoint="model:simulate", sets=sets,
                     seeds=Seeds(first=0, count=count), aggregate="model:total")


def _outcomes(result):
    """Per (set, seed): outputs, or the failure's type and message."""
    out = {}
    for s in result.sets:
        for seed, r in s.results.items():
            out[(s.set.id, seed)] = ("ok", r.outputs)
        for f in s.failures:
            out[(s.set.id, f.seed)] = ("failed", f.error_type, f.message, f.key)
    return out


def test_batched_runs_give_exactly_the_unbatched_results_and_failures(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    _, client = dask_cluster(direct_env(repo), nworkers=2, nthreads=1)
    sets = [ParamSet.of({"x": 1.0}, "one", index=0),
            ParamSet.of({"x": 2.0, "fail_seeds": "3,17"}, "two", index=1)]
    plain = submit_study(client, _plan(ref, "plain", sets, 40), batch=1, window=30)
    unbatched = gather_study(client, plain, progress=False)
    assert plain.tasks == 80
    fixed = submit_study(client, _plan(ref, "plain", sets, 40), batch=7, window=30)
    batched = gather_study(client, fixed, progress=False)
    # measured sizes: a target far above any run's time here, so grouping never depends on
    # how loaded the machine is
    measured = submit_study(client, _plan(ref, "plain", sets, 40), window=30, batch_target=30)
    auto = gather_study(client, measured, progress=False)

    expected = _outcomes(unbatched)
    assert len(expected) == 80
    assert sum(1 for v in expected.values() if v[0] == "failed") == 2
    assert _outcomes(batched) == expected and _outcomes(auto) == expected
    assert fixed.tasks < 80 and measured.tasks < 80, (fixed.tasks, measured.tasks)
    for result in (batched, auto):  # aggregates over the same successful runs
        assert [s.aggregate.outputs for s in result.sets] == \
            [s.aggregate.outputs for s in unbatched.sets]
    assert fixed.max_in_flight <= 30 and measured.max_in_flight <= 30
    # a study no bigger than the probe: its plan is still measured, from its own runs
    small = submit_study(client, _plan(ref, "small", sets[:1], 4))
    assert gather_study(client, small, progress=False).ok
    assert small.batching.source == "measured" and small.batching.probe_runs == 2, \
        small.batching.describe()


def test_a_worker_killed_mid_batch_changes_no_run(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    _, client = dask_cluster(direct_env(repo), nworkers=2, nthreads=1)
    flag = tmp_path / "stalled"
    sets = [ParamSet.of({"x": 3.0, "fail_seeds": "2", "stall_flag": str(flag),
                         "stall_seed": 12}, index=0)]
    sub = submit_study(client, _plan(ref, "killed", sets, 30), batch=10)
    runs = iter(sub)
    first = next(runs)  # submitted; the batch holding seed 12 stalls in its worker
    wait_for(flag.exists, 120, "the batch with seed 12 to start")
    wait_for(lambda: flag.read_text().strip().isdigit(), 10, "the stalled worker's pid")
    os.kill(int(flag.read_text()), signal.SIGKILL)
    rest = list(runs)
    got = {(o.seed): (("ok", o.result.outputs) if o.ok else
                      ("failed", o.failure.error_type, o.failure.message))
           for o in [first, *rest]}
    assert len(got) == 30
    assert got[2] == ("failed", "SimulationError",
                      got[2][2]) and "seed 2 fails on purpose" in got[2][2]
    assert {s: v[1] for s, v in got.items() if v[0] == "ok"} == \
        {s: {"value": 3.0 * s, "seed": s} for s in range(30) if s != 2}


def test_the_plan_aims_at_the_target_and_keeps_every_thread_busy():
    def size(run_s, **kw):
        kw = {"left": 100_000, "slots": 1, "window": 100_000, **kw}
        return plan_batches([[run_s]], **kw).size

    assert size(0.001) == 90                       # 0.1 s / 1 ms = 100, quantised down
    assert size(0.5) == 1                          # slow runs stay alone
    assert size(0.0) == quantise(int(BATCH_TARGET / RUN_FLOOR))  # no-ops: the floor
    assert size(0.0, target=10) == MAX_BATCH
    assert size(0.001, target=0.05) == 45
    assert size(0.001, left=400, slots=4) == 50    # two tasks per thread at least
    assert size(1e-6, window=1000, slots=4) == 250  # the window holds a task per thread
    assert plan_batches([[], []], left=10, slots=2, window=100).size == 1  # nothing measured


def test_the_plan_reads_the_probe_robustly():
    """Each probe task's fastest run (its first may pay an import or a process start), the
    median across probe tasks (one slow thread does not move it), sizes on a grid."""
    assert per_run_estimate([[0.9, 0.002], [0.8, 0.002], [0.002, 0.7], [5.0, 0.002]]) == 0.002
    assert per_run_estimate([[0.002], [0.002], [3.0]]) == 0.002
    assert per_run_estimate([]) is None
    assert [quantise(n) for n in (1, 2, 3, 4, 5, 7, 8, 100, 249, 1000)] == \
        [1, 2, 2, 4, 4, 6, 8, 90, 215, 861]
    grid = sorted({quantise(n) for n in range(1, 2000)})
    assert all(b / a <= 2 for a, b in zip(grid, grid[1:]))
    assert all(b / a < 1.25 for a, b in zip(grid, grid[1:]) if a >= 8)
    # noise within a grid step moves the size by at most one step (< 20 % above 8 runs)
    kw = {"left": 100_000, "slots": 4, "window": 100_000}
    for run_s in (0.0003, 0.001, 0.004, 0.02):
        a = plan_batches([[run_s]] * 4, **kw).size
        b = plan_batches([[run_s * 1.1]] * 4, **kw).size
        assert a == b or a / b < 1.25 or a < 8, (run_s, a, b)


def test_the_same_study_twice_gets_the_same_plan(dask_cluster, tmp_path, wheelhouse):
    """Issue #30: 2,000 no-ops auto-batched once made 1,022 Dask tasks and 153 the next time.
    prod-warm (isolated_warm): the first study pays the venv build and the warm processes'
    start inside its probe, the second finds them warm; both get one plan. And a model of
    ~1 ms the same, once on a cold cluster and once warm."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL + SLOW, "requirements.txt": ""})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"MODELOPS_BUNDLE_REPO": str(repo), "TMPDIR": str(scratch),
           **offline_uv_env(wheelhouse)}
    _, client = dask_cluster(env, nworkers=2, nthreads=2)
    sets = [ParamSet.of({"x": 1.0}, index=0)]
    plans = []
    for name in ("noop1", "noop2"):
        sub = submit_study(client, _plan(ref, name, sets, 2000))
        outcome = gather_study(client, sub, progress=False)
        assert outcome.ok and sub.batching.source == "measured"
        plans.append(sub.batching)
    assert plans[0].size == plans[1].size, [p.describe() for p in plans]
    assert plans[0].probe_tasks == 4 and plans[0].probe_runs == 2
    assert "run(s) per Dask task (probe 4 task(s) of 2 run(s); run ~" in plans[0].describe()
    assert "capped by two tasks per thread (4) for the 1992 runs left" in plans[0].describe()
    # 400 runs of ~1 ms: two tasks per thread for what is left (49 runs) is below 0.1 s of
    # runs, so the plan depends on the study and the cluster's threads only
    slow = []
    for name in ("slow1", "slow2"):
        plan = StudyPlan(name=name, bundle=ref, entrypoint="model:slow", sets=sets,
                         seeds=Seeds(count=400))
        sub = submit_study(client, plan)
        assert gather_study(client, sub, progress=False).ok
        slow.append(sub.batching.size)
    assert max(slow) / min(slow) <= 1.2, slow


FORKED_MODEL = '''
import os

def sim(params, seed):
    import slowlib   # lazily, as numpy.random or scipy: the template learns it
    if seed == params["crash"]:
        os.kill(os.getpid(), 9)
    if seed == params["fail"]:
        raise ValueError(f"seed {seed} fails")
    return {"seed": seed, "value": slowlib.VALUE}
'''


def test_fresh_process_studies_are_batched_and_each_run_keeps_its_own_process(
        dask_cluster, tmp_path):
    """Session 6: a fresh-process study of SIR ran as 296 Dask tasks for 300 runs. A forked
    run's time counted the template's one-time work: its start, and its importing what the
    first task processes imported (learned), so both probe runs of every probe task looked
    as slow as that and the plan said 1. Here that one-time work is an import of 1.5 s, more
    than the target of 1 s per task: the plan groups runs all the same. Inside a batch each
    run still has its own process forked from the template, its own outcome: a run whose
    process is killed fails alone, typed."""
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(links, "slowlib", "1.0",
                {"slowlib": "import time\ntime.sleep(1.5)  # a heavy import\nVALUE = 7\n"})
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": FORKED_MODEL,
                                       "requirements.txt": "slowlib\n"})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"MODELOPS_BUNDLE_REPO": str(repo), "TMPDIR": str(scratch),
           "MODELOPS_MAX_PROCESS_REUSE": "1", **offline_uv_env(links)}
    # two worker processes: each has its own template, each of its probe runs pays its
    # part (as SIR's 4 probe tasks on 4 workers did)
    _, client = dask_cluster(env, nworkers=2, nthreads=1)
    plan = StudyPlan(name="forked", bundle=ref, entrypoint="model:sim",
                     sets=[ParamSet.of({"crash": 21, "fail": 30}, index=0)],
                     seeds=Seeds(count=40))
    sub = submit_study(client, plan, batch_target=1.0)
    outcomes = {o.seed: o for o in sub}
    batching = sub.batching
    assert batching is not None and batching.source == "measured", batching
    assert batching.size > 1 and sub.tasks < 40, (sub.tasks, batching.describe())
    assert sorted(outcomes) == list(range(40))
    failed = {s: o.failure for s, o in outcomes.items() if not o.ok}
    assert sorted(failed) == [21, 30], failed
    assert failed[21].error_type == "ProcessCrashed" and "SIGKILL" in failed[21].message
    assert failed[30].error_type == "SimulationError" and "seed 30 fails" in failed[30].message
    results = [o.result for o in outcomes.values() if o.ok]
    assert [r.outputs for r in sorted(results, key=lambda r: r.outputs["seed"])] == \
        [{"seed": s, "value": 7} for s in range(40) if s not in (21, 30)]
    assert {r.process_task_count for r in results} == {1}
    assert len({r.pid for r in results}) == len(results)  # no run reused a process


@pytest.mark.parametrize("kwargs, message", [
    ({"batch": 0}, "batch must be >= 1"), ({"batch_target": 0}, "batch_target must be > 0")])
def test_bad_batch_settings_are_refused(kwargs, message):
    plan = _plan("sha256:" + "a" * 64, "bad", [ParamSet.of({"x": 1})], 3)
    with pytest.raises(ValueError, match=message):
        submit_study(None, plan, **kwargs)


WARM_MODEL = '''
import os
COUNT = 0

def sim(params, seed):
    global COUNT
    COUNT += 1
    if seed == params.get("crash"):
        os.kill(os.getpid(), 9)
    if seed == params.get("fail"):
        raise ValueError(f"seed {seed} fails")
    if seed == params.get("bad_output"):
        return {"f": lambda: 1}
    return {"seed": seed, "twice": 2 * seed}
'''


def _kinds(outcomes):
    return [(type(o).__name__, o.outputs) if not isinstance(o, Exception)
            else (type(o).__name__, str(o).split("\n")[0][:60]) for o in outcomes]


def test_a_warm_process_runs_a_batch_in_one_round_trip_with_per_run_outcomes(tmp_path, warm):
    from modelops_runtime.models import Call

    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"model.py": WARM_MODEL, "requirements.txt": ""}, name="w")
    ex = warm()
    params = {"fail": 3, "bad_output": 5}
    calls = [Call(bundle=ref, entrypoint="model:sim", args=(params, s)) for s in range(8)]
    single = [ex.run(c) if s not in (3, 5) else None for s, c in enumerate(calls)]
    batched = ex.run_many(calls)
    assert [type(b).__name__ for b in batched] == \
        ["SimResult"] * 3 + ["SimulationError", "SimResult", "SimulationError"] + ["SimResult"] * 2
    assert [b.outputs for b in batched if not isinstance(b, Exception)] == \
        [r.outputs for r in single if r is not None]
    assert "fails" in str(batched[3]) and "cannot travel back" in str(batched[5])
    counts = [b.process_task_count for b in batched if not isinstance(b, Exception)]
    assert counts == sorted(counts) and len({b.pid for b in batched
                                              if not isinstance(b, Exception)}) == 1

    # a run that kills its process mid-batch: the batch runs again one by one, only that
    # run fails (typed), every other one has its result
    crash = [Call(bundle=ref, entrypoint="model:sim", args=({"crash": 2}, s)) for s in range(5)]
    out = ex.run_many(crash)
    assert [type(o).__name__ for o in out] == \
        ["SimResult", "SimResult", "ProcessCrashed", "SimResult", "SimResult"]
    assert out[2].signal_name == "SIGKILL"
    assert [o.outputs["seed"] for o in out if not isinstance(o, Exception)] == [0, 1, 3, 4]
