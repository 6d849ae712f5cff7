"""Studies of many parameter sets through the real `modelops-runtime local` CLI on the real
chart: results per (set, seed) equal to the model run directly, per-set aggregates equal to
a plain loop's, failed runs listed per set and kept out of their aggregate, the runs as a
Parquet table, a changed param of one set refused by compare naming it — and the bug this
exists for: a warm-process state leak that appears only from the 4th distinct parameter
set, reproduced in prod-warm and gone in fresh-process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import yaml

from e2e_support import CLI, STUDY, assert_nothing_left, preset
from support.bundles import write_bundle

SEEDS = 3
FIRST_SEED = 100   # sir_study/study.yaml
GRID = {"beta": [0.3, 0.5], "fail_seed": [101, -1]}    # set 0 and 2 fail at seed 101


def grid_study(tmp_path, name: str, grid: dict) -> str:
    data = yaml.safe_load((STUDY / "study.yaml").read_text())
    data["bundle"] = str(STUDY / "bundle")
    for k in grid:
        data["params"].pop(k, None)
    data.update(name=name, grid=grid, seeds_per_set=SEEDS)
    data.pop("sims")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def plain_summary(outputs: list[dict]) -> dict:
    """The bundle's aggregation called directly (no Dask) on a plain loop's outputs."""
    code = ("import json, sys; from sirtest.aggregate import peak_summary; "
            "print(json.dumps(peak_summary(json.loads(sys.stdin.read()))))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(outputs),
                         env={**os.environ, "PYTHONPATH": str(STUDY / "bundle")},
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_a_grid_gives_every_set_and_seed_its_aggregate_and_a_table(local_cli, local_env,
                                                                     reference, tmp_path):
    study = grid_study(tmp_path, "grid", GRID)
    base, table = tmp_path / "base.json", tmp_path / "runs.parquet"
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", study, "--state-dir",
                         tmp_path / "state", "--results", base, "--results", table], local_env())
    assert run.popen.returncode == 1, run.output        # runs failed on purpose
    assert "study grid: 4 parameter sets × 3 seeds = 12 runs" in run.stdout
    assert "runs: 10 ok, 2 failed" in run.stdout
    assert "per-set results by sirtest.aggregate:peak_summary (4 sets):" in run.stdout
    assert "failed runs per set:" in run.stdout
    data = json.loads(base.read_text())
    sets = data["param_sets"]
    assert [(s["params"]["beta"], s["params"]["fail_seed"]) for s in sets] == \
        [(0.3, 101), (0.3, -1), (0.5, 101), (0.5, -1)]
    assert data["inputs"]["sets"] == {s["id"]: s["params"] for s in sets}

    # every (set, seed) as the model run directly gives it; failures listed per set
    got = {(r["set"], r["seed"]): r["result"]["outputs"] for r in data["sims"]}
    failed = {(f["set"], f["seed"]) for f in data["failures"]}
    aggregates = {a["set_id"]: a for a in data["set_aggregates"]}
    for s in sets:
        ok = []
        for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
            if seed == s["params"]["fail_seed"]:
                assert (s["id"], seed) in failed and (s["id"], seed) not in got
                continue
            assert got[(s["id"], seed)] == reference(seed, s["params"]), (s, seed)
            ok.append(got[(s["id"], seed)])
        agg = aggregates[s["id"]]
        assert agg["runs"] == len(ok) and agg["failed"] == SEEDS - len(ok)
        assert agg["aggregate"]["outputs"] == plain_summary(ok), \
            "a per-set aggregate differs from the plain loop's (or was given a failed run)"
        assert s["id"] in run.stdout       # the set's row in the printed table

    # the runs as a table: one row per (set, seed), params, outputs and metadata as columns
    t = pq.read_table(table).to_pylist()
    assert len(t) == 4 * SEEDS
    assert [(r["set_index"], r["seed"]) for r in t] == \
        [(i, seed) for i in range(4) for seed in range(FIRST_SEED, FIRST_SEED + SEEDS)]
    row = next(r for r in t if r["ok"])
    assert got[(row["set_id"], row["seed"])]["peak_infected"] == row["output.peak_infected"]
    assert row["param.beta"] in (0.3, 0.5) and row["executor"] == "isolated_warm"
    assert row["process_task_count"] >= 1 and row["pid"] > 0
    bad = [r for r in t if not r["ok"]]
    assert {r["error_type"] for r in bad} == {"SimulationError"} and len(bad) == 2
    assert_nothing_left(run)

    # one set's beta changed: compare refuses before anything starts, naming the param
    changed = grid_study(tmp_path, "grid", {"beta": [0.3, 0.55], "fail_seed": [101, -1]})
    again = local_cli.run(["-f", preset("prod-warm").file, "--study", changed, "--state-dir",
                           tmp_path / "state2", "--compare", base], local_env())
    assert again.popen.returncode == 2, again.output
    assert again.stderr.strip().splitlines() == [
        f"error: not comparable: param 'beta' of set 3 of 4 differs: 0.5 in {base}, 0.55 in "
        "this study; compare runs of the same study"], again.output
    assert not (tmp_path / "state2").exists()


# -- a state leak from the 4th distinct parameter set on ------------------------------------

LEAK_MODEL = '''
"""A model with a bounded cache that goes wrong once it has seen 3 parameter sets: from the
4th distinct set a process runs, every result is off by one. Correct in a fresh process."""
import random

_SEEN = []


def simulate(params, seed):
    key = tuple(sorted(params.items()))
    if key not in _SEEN:
        _SEEN.append(key)
    value = params["beta"] * random.Random(seed).random() + params["gamma"]
    if len(_SEEN) >= 4:
        value += 1.0
    return {"value": value}
'''


def test_a_leak_from_the_4th_parameter_set_shows_in_prod_warm_not_in_fresh_process(
        local_cli, local_env, tmp_path):
    bundle = write_bundle(tmp_path / "leaky", {"leaky.py": LEAK_MODEL, "requirements.txt": ""})
    study = tmp_path / "leak.yaml"
    study.write_text(yaml.safe_dump({
        "name": "leak", "bundle": str(bundle), "entrypoint": "leaky:simulate",
        # 16 sets over the 4 worker processes of prod-warm: one of them runs >= 4 sets
        "grid": {"beta": [0.1, 0.2, 0.3, 0.4], "gamma": [0.01, 0.02, 0.03, 0.04]},
        "seeds_per_set": 2}))
    spec = importlib.util.spec_from_file_location("leaky_plain", bundle / "leaky.py")

    def plain(params: dict, seed: int) -> dict:
        module = importlib.util.module_from_spec(spec)   # a fresh module: no state
        spec.loader.exec_module(module)
        return module.simulate(params, seed)

    runs = {}
    for name in ("prod-warm", "fresh-process"):
        results = tmp_path / f"{name}.json"
        run = local_cli.run(["-f", preset(name).file, "--study", study, "--state-dir",
                             tmp_path / "state", "--results", results, "--no-progress"],
                            local_env())
        assert run.popen.returncode == 0, run.output
        assert_nothing_left(run)
        data = json.loads(results.read_text())
        params = {s["id"]: s["params"] for s in data["param_sets"]}
        assert len(params) == 16 and len(data["sims"]) == 32
        runs[name] = wrong = [(r["set"], r["seed"], r["result"]["process_task_count"])
                              for r in data["sims"]
                              if r["result"]["outputs"] != plain(params[r["set"]], r["seed"])]
    # prod-warm: reproduced, and only where a process had run other tasks before (>= 4)
    assert runs["prod-warm"], "the leak did not show in prod-warm"
    assert all(count >= 4 for _, _, count in runs["prod-warm"]), runs["prod-warm"]
    assert runs["fresh-process"] == [], "fresh-process must run every set in a new process"

    # compare, set and seed by set and seed: the mode changes the results
    out = subprocess.run([CLI, "compare", str(tmp_path / "prod-warm.json"),
                          str(tmp_path / "fresh-process.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out
    assert f"{len(runs['prod-warm'])} of 32" in out.stdout, out.stdout
