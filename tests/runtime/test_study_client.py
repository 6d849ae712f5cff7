"""The client API for studies of parameter sets × seeds, on a real `dask scheduler` and
`dask worker --preload modelops_runtime.preload` (executor direct: cheap to start):
results per (set, seed), per-set aggregates equal to a plain loop's, failures listed per
set and never aggregated, and a 100,000-run study submitted in a bounded window."""

from __future__ import annotations

import importlib.util
import itertools

from modelops_runtime.client import (ParamSet, Seeds, StudyPlan, StudySetsResult, gather_study,
                                     plan_of, run_key, submit_study)
from support.bundles import make_bundle, write_bundle
from support.cluster import direct_env, wait_for

MODEL = '''
def simulate(params, seed):
    if seed == params.get("fail_seed"):
        raise RuntimeError(f"seed {seed} fails on purpose")
    return {"value": params["x"] * seed + params.get("y", 0), "seed": seed}

def total(outputs):
    return {"total": sum(o["value"] for o in outputs), "n": len(outputs),
            "seeds": [o["seed"] for o in outputs]}

def best(sets):
    top = max(sets, key=lambda s: s["aggregate"]["total"])
    return {"best": top["set_id"], "label": top["label"], "sets": len(sets),
            "runs": sum(s["runs"] for s in sets), "failed": sum(s["failed"] for s in sets)}
'''


def _plain_model(tmp_path):
    """The bundle's module imported directly: the plain loop the study must equal."""
    path = write_bundle(tmp_path / "plain", {"model.py": MODEL}) / "model.py"
    spec = importlib.util.spec_from_file_location("plain_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_set_aggregates_equal_a_plain_loop_and_failures_stay_out(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    _, client = dask_cluster(direct_env(repo), nworkers=2, nthreads=1)
    sets = [ParamSet.of({"x": 1.0, "y": 0}, "one", index=0),
            ParamSet.of({"x": 2.0, "y": 5, "fail_seed": 3}, "two", index=1),
            ParamSet.of({"x": 0.5, "y": 1, "fail_seed": 0}, index=2)]
    plan = StudyPlan(name="agg", bundle=ref, entrypoint="model:simulate", sets=sets,
                     seeds=Seeds(first=0, count=6), aggregate="model:total",
                     aggregate_sets="model:best")
    result = gather_study(client, submit_study(client, plan, window=4), progress=False)
    assert isinstance(result, StudySetsResult)

    model = _plain_model(tmp_path)
    for s, got in zip(sets, result.sets):
        assert got.set == s
        ok, failed = [], []
        for seed in range(6):       # the plain loop
            try:
                ok.append((seed, model.simulate(dict(s.params), seed)))
            except RuntimeError:
                failed.append(seed)
        assert {seed: r.outputs for seed, r in got.results.items()} == dict(ok)
        assert [(f.set_id, f.seed, f.error_type) for f in got.failures] == \
            [(s.id, seed, "SimulationError") for seed in failed]
        assert got.aggregate.outputs == model.total([o for _, o in ok]), \
            "a per-set aggregate differs from the plain loop's (or got a failed run)"
    assert result.across.outputs == {"best": sets[1].id, "label": "two", "sets": 3,
                                     "runs": 16, "failed": 2}
    assert not result.ok and len(result.failures) == 2
    assert result.max_in_flight <= 4


def test_keys_are_stable_and_unique_per_study_set_and_seed():
    ref = "sha256:" + "b" * 64
    a = plan_of("s1", ref, "m:f", [{"x": 1}, {"x": 2}], 3)
    again = plan_of("s1", ref, "m:f", [{"x": 1}, {"x": 2}], 3)
    other = plan_of("s2", ref, "m:f", [{"x": 1}, {"x": 2}], 3)
    keys = [run_key(a.name, s.id, seed, a.code) for s, seed in a.runs()]
    assert len(set(keys)) == 6
    assert keys == [run_key(again.name, s.id, seed, again.code) for s, seed in again.runs()]
    assert not set(keys) & {run_key(other.name, s.id, seed, other.code)
                            for s, seed in other.runs()}


class CountingSets:
    """A lazy source of 1,000 sets that counts how many were taken from it."""

    def __init__(self, n: int) -> None:
        self.n, self.taken = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i in range(self.n):
            self.taken += 1
            yield ParamSet.of({"x": float(i)}, index=i)


def test_a_100000_run_study_is_submitted_in_a_bounded_window(dask_cluster, tmp_path):
    """1,000 sets × 100 seeds: consuming the first 300 outcomes submits at most 300 +
    window runs and takes only the sets those need; stopping cancels the rest, so the
    scheduler is left with nothing of the study."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    _, client = dask_cluster(direct_env(repo), nworkers=2, nthreads=1)
    source = CountingSets(1000)
    plan = StudyPlan(name="big", bundle=ref, entrypoint="model:simulate", sets=source,
                     seeds=Seeds(count=100))
    assert plan.run_count == 100_000
    window = 64
    sub = submit_study(client, plan, window=window)
    outcomes = list(itertools.islice(sub, 300))
    sub_iter_closed = sub.submitted            # read before the generator is collected
    assert all(o.ok for o in outcomes)
    assert [(o.set.index, o.seed) for o in outcomes[:3]] != []
    assert sub_iter_closed <= 300 + window, sub_iter_closed
    assert sub.max_in_flight <= window
    assert source.taken <= (300 + window) // 100 + 1, source.taken
    for o in outcomes:
        assert o.result.outputs["value"] == o.set.params["x"] * o.seed

    del outcomes
    wait_for(lambda: client.run_on_scheduler(
        lambda dask_scheduler: sum(1 for k in dask_scheduler.tasks
                                   if str(k).startswith("modelops-run-big-"))) == 0, 60,
        "the study's runs still in flight to be cancelled when the consumer stopped")
