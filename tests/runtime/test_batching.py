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
from modelops_runtime.client.submit import MAX_BATCH, batch_size
from support.bundles import make_bundle
from support.cluster import wait_for

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


def _env(repo):
    return {"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLE_REPO": str(repo)}


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
    _, client = dask_cluster(_env(repo), nworkers=2, nthreads=1)
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


def test_a_worker_killed_mid_batch_changes_no_run(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    _, client = dask_cluster(_env(repo), nworkers=2, nthreads=1)
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


def test_batch_size_aims_at_the_target_and_keeps_every_thread_busy():
    assert batch_size(0.001) == 100                   # 100 × 1 ms ≈ 0.1 s
    assert batch_size(0.5) == 1                       # slow runs stay alone
    assert batch_size(0.0) == MAX_BATCH               # capped
    assert batch_size(0.001, target=0.05) == 50
    assert batch_size(0.001, left=400, slots=4) == 50  # two tasks per thread at least


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
