"""The study file's parameter sets: ``grid``, ``sets`` and ``sets_file`` (CSV, Parquet)
expand to the right (set, seed) runs with stable ids, lazily; every bad input is one
clear ``error:`` line from the real CLI, before anything starts."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from modelops_runtime.client import ParamSet, Seeds, StudyPlan, set_id
from modelops_runtime.errors import LocalModeError
from modelops_runtime.local.results import SINGLE_SET
from modelops_runtime.local.study.studyfile import Study

CLI = str(Path(sys.executable).parent / "modelops-runtime")
REF = "sha256:" + "a" * 64


def study_file(tmp_path: Path, name: str = "study.yaml", **fields) -> Path:
    """A study file next to a (tiny) bundle directory."""
    (tmp_path / "bundle").mkdir(exist_ok=True)
    data = {"bundle": "bundle", "entrypoint": "model:simulate", **fields}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def runs(study: Study, sims: int | None = None) -> list[tuple[str, dict, int]]:
    plan = study.plan(REF, sims)
    return [(s.id, dict(s.params), seed) for s, seed in plan.runs()]


# -- expansion ------------------------------------------------------------------------------

def test_grid_expands_to_every_combination_times_every_seed(tmp_path):
    study = Study.load(study_file(tmp_path, params={"days": 50},
                                  grid={"beta": [0.2, 0.3, 0.4], "gamma": [0.1, 0.2]},
                                  seeds_per_set=3, first_seed=10))
    got = runs(study)
    assert study.set_count == 6 and len(got) == 18
    combos = [{"days": 50, "beta": b, "gamma": g} for b in (0.2, 0.3, 0.4) for g in (0.1, 0.2)]
    assert got == [(set_id(c), c, seed) for c in combos for seed in (10, 11, 12)]
    # the same run again: the same ids (a pure function of the file)
    assert runs(Study.load(tmp_path / "study.yaml")) == got


def test_reordered_grid_keys_and_csv_columns_give_the_same_ids(tmp_path):
    a = Study.load(study_file(tmp_path, "a.yaml", grid={"beta": [0.2, 0.3], "gamma": [0.1]}))
    b = Study.load(study_file(tmp_path, "b.yaml", grid={"gamma": [0.1], "beta": [0.2, 0.3]}))
    assert {i for i, _, _ in runs(a)} == {i for i, _, _ in runs(b)}

    (tmp_path / "ab.csv").write_text("label,beta,gamma\nlow,0.2,0.1\nhigh,0.3,0.1\n")
    (tmp_path / "ba.csv").write_text("gamma,label,beta\n0.1,low,0.2\n0.1,high,0.3\n")
    x = Study.load(study_file(tmp_path, "x.yaml", sets_file="ab.csv", sims=2))
    y = Study.load(study_file(tmp_path, "y.yaml", sets_file="ba.csv", sims=2))
    assert runs(x) == runs(y)
    assert [s.label for s in x.source] == ["low", "high"]
    # a label is part of the id: the same params under another label are another set
    assert set_id({"beta": 0.2, "gamma": 0.1}, "low") != set_id({"beta": 0.2, "gamma": 0.1})


def test_sets_and_sets_file_give_typed_params_and_the_same_ids(tmp_path):
    sets = [{"label": "a", "beta": 0.25, "n": 3, "on": True, "kind": "x"},
            {"label": "b", "beta": 0.5, "n": 4, "on": False, "kind": "y"}]
    listed = Study.load(study_file(tmp_path, "l.yaml", sets=sets, params={"days": 9}, sims=1))
    (tmp_path / "s.csv").write_text("label,beta,n,on,kind\na,0.25,3,true,x\nb,0.5,4,false,y\n")
    csv_ = Study.load(study_file(tmp_path, "c.yaml", sets_file="s.csv", params={"days": 9}, sims=1))
    pq.write_table(pa.table({"kind": ["x", "y"], "n": [3, 4], "beta": [0.25, 0.5],
                             "on": [True, False], "label": ["a", "b"]}), tmp_path / "s.parquet")
    parquet = Study.load(study_file(tmp_path, "p.yaml", sets_file="s.parquet",
                                    params={"days": 9}, sims=1))
    expected = runs(listed)
    assert expected[0][1] == {"days": 9, "beta": 0.25, "n": 3, "on": True, "kind": "x"}
    assert runs(csv_) == expected and runs(parquet) == expected
    # a CSV column with an int and a float is a float column: 1 → 1.0, in every row
    (tmp_path / "f.csv").write_text("beta\n1\n0.5\n")
    assert [s.params for s in Study.load(study_file(tmp_path, "f.yaml",
                                                    sets_file="f.csv")).source] == \
        [{"beta": 1.0}, {"beta": 0.5}]


def test_params_only_is_one_set_with_sims_and_first_seed_as_before(tmp_path):
    study = Study.load(study_file(tmp_path, params={"beta": 0.3}, sims=4, first_seed=7))
    assert study.set_count == 1
    assert [seed for _, _, seed in runs(study)] == [7, 8, 9, 10]
    assert [seed for _, _, seed in runs(study, sims=2)] == [7, 8]     # --sims overrides
    assert [t.seed for t in study.tasks(REF)] == [7, 8, 9, 10]
    assert runs(study)[0][0] == SINGLE_SET   # the one set id compare knows (results.py)


def test_a_100000_run_grid_expands_lazily(tmp_path):
    """10 × 10 × 10 sets × 100 seeds: iterating every run holds one set at a time. The
    list of the same runs as SimTasks takes far more than the bound (measured below)."""
    grid = {"a": list(range(10)), "b": [x / 10 for x in range(10)], "c": list("abcdefghij")}
    study = Study.load(study_file(tmp_path, grid=grid, seeds_per_set=100))
    plan = study.plan(REF)
    assert plan.run_count == 100_000
    tracemalloc.start()
    try:
        n = sum(1 for _ in plan.runs())
        lazy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tasks = [plan.task(s, seed) for s, seed in itertools.islice(plan.runs(), 10_000)]
        tenth_as_list = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 100_000 and len(tasks) == 10_000
    assert lazy_peak < 1_000_000, f"expanding 100,000 runs took {lazy_peak} bytes at once"
    assert tenth_as_list > 10 * lazy_peak, (lazy_peak, tenth_as_list)


def test_the_client_plan_refuses_a_set_given_twice():
    s = ParamSet.of({"beta": 0.3})
    plan = StudyPlan(bundle=REF, entrypoint="m:f", sets=[s, ParamSet.of({"beta": 0.4}), s],
                     seeds=Seeds(count=2))
    with pytest.raises(ValueError, match="is in the study twice"):
        list(plan.runs())


# -- bad input: one clear error line each, from the real CLI, nothing started ----------------

def cli_error(tmp_path: Path, study: Path) -> str:
    state = tmp_path / "state"
    out = subprocess.run([CLI, "local", "--study", str(study), "--state-dir", str(state),
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "local mode:" not in out.stdout, "the cluster was started for a bad study"
    assert not state.exists(), "a bad study left state behind"
    return lines[0]


BAD_STUDIES = {
    "grid-empty-list": ({"grid": {"beta": [0.2], "gamma": []}},
                        "grid.gamma is an empty list: give at least one value"),
    "grid-nested": ({"grid": {"beta": [[0.2, 0.3]]}},
                    "grid.beta[0] is a list ([0.2, 0.3]): every parameter value must be a scalar"),
    "grid-duplicate-value": ({"grid": {"beta": [0.2, 0.2]}}, "grid.beta lists 0.2 twice"),
    "mixed-forms": ({"grid": {"beta": [0.2]}, "sets": [{"beta": 0.3}]},
                    "grid and sets are both given"),
    "unknown-field": ({"grids": {"beta": [0.2]}}, "grids: Extra inputs are not permitted"),
    "param-twice": ({"params": {"beta": 0.1}, "grid": {"beta": [0.2]}},
                    "beta is in params and in grid: give it in one"),
    "sims-and-seeds_per_set": ({"sims": 3, "seeds_per_set": 3},
                               "sims and seeds_per_set are both given"),
    "duplicate-labels": ({"sets": [{"label": "x", "beta": 0.2}, {"label": "x", "beta": 0.3}]},
                         "label 'x' is used twice (sets[0] and sets[1])"),
    "duplicate-sets": ({"sets": [{"beta": 0.2}, {"beta": 0.2}]},
                       "sets[1] repeats the set of sets[0]"),
    "aggregate_sets-alone": ({"aggregate_sets": "m:f", "grid": {"beta": [0.2]}},
                             "aggregate_sets is called with every set's aggregate, so it needs "
                             "aggregate"),
}

BAD_FILES = {
    "csv-missing-column": ("beta,gamma\n0.2,0.1\n0.3\n",
                           "line 3: no value for column(s) gamma (the row has 1 cells, the "
                           "header 2)"),
    "csv-empty-cell": ("beta,gamma\n0.2,\n", "line 2: column gamma is empty"),
    "csv-non-scalar": ('beta,contacts\n0.2,"[1, 2]"\n',
                       "line 2: column contacts holds '[1, 2]', a list or mapping; every cell "
                       "must be a scalar"),
    "csv-duplicate-labels": ("label,beta\nlow,0.2\nlow,0.3\n",
                             "label 'low' is used twice (line 2 and line 3)"),
    "csv-duplicate-rows": ("beta\n0.3\n0.30\n", "line 3 repeats the set of line 2"),
    "csv-no-rows": ("beta,gamma\n", "has a header but no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_a_bad_study_is_one_error_line(case, tmp_path):
    fields, message = BAD_STUDIES[case]
    line = cli_error(tmp_path, study_file(tmp_path, **fields))
    assert message in line, line


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_csv_sets_file_is_one_error_line(case, tmp_path):
    text, message = BAD_FILES[case]
    (tmp_path / "sets.csv").write_text(text)
    line = cli_error(tmp_path, study_file(tmp_path, sets_file="sets.csv"))
    assert f"sets_file {tmp_path / 'sets.csv'}" in line and message in line, line


@pytest.mark.parametrize("case", ["list-column", "null-cell", "duplicate-labels", "missing"])
def test_a_bad_parquet_sets_file_is_one_error_line(case, tmp_path):
    path = tmp_path / "sets.parquet"
    table, message = {
        "list-column": ({"beta": [0.2], "contacts": [[1, 2]]},
                        "column contacts is of type list<element: int64>, not a scalar"),
        "null-cell": ({"beta": [0.2, None]}, "row 2: column beta is empty (null)"),
        "duplicate-labels": ({"label": ["a", "a"], "beta": [0.2, 0.3]},
                             "label 'a' is used twice (row 1 and row 2)"),
        "missing": (None, "does not exist (it is relative to the study file)"),
    }[case]
    if table is not None:
        pq.write_table(pa.table(table), path)
    line = cli_error(tmp_path, study_file(tmp_path, sets_file="sets.parquet"))
    assert message in line, line


def test_errors_of_a_study_built_in_code_are_typed(tmp_path):
    study = Study.load(study_file(tmp_path, grid={"beta": [0.2]}))
    broken = study.model_copy(update={"grid": {"beta": []}})
    with pytest.raises(LocalModeError, match="grid.beta is an empty list"):
        broken.plan(REF)


def test_results_records_every_set(tmp_path):
    """The plan's sets serialise as the results file stores them (id, label, params)."""
    study = Study.load(study_file(tmp_path, sets=[{"label": "a", "beta": 0.2}]))
    (s,) = list(study.source)
    assert json.loads(s.model_dump_json()) == {"id": set_id({"beta": 0.2}, "a"),
                                               "params": {"beta": 0.2}, "label": "a",
                                               "index": 0}


def test_compare_names_the_changed_param_of_a_set_and_accepts_a_subset(tmp_path):
    """Set ids are content hashes: a changed beta is a new id. Inputs are matched by the
    sets' positions to name it; a rerun of some of the sets (or an extended grid) is
    comparable on the sets both have."""
    from modelops_runtime.local.compare.runs import inputs_difference

    def inputs(name: str, **grid):
        return Study.load(study_file(tmp_path, f"{name}.yaml", grid=grid, sims=2)).inputs(REF)

    base = inputs("base", beta=[0.2, 0.3], gamma=[0.1])
    changed = inputs("changed", beta=[0.2, 0.35], gamma=[0.1])
    assert inputs_difference(base, changed, "A", "B") == \
        "param 'beta' of set 2 of 2 differs: 0.3 in A, 0.35 in B"
    assert inputs_difference(base, inputs("more", beta=[0.2, 0.3, 0.4], gamma=[0.1]),
                             "A", "B") is None
    assert inputs_difference(base, inputs("fewer", beta=[0.3], gamma=[0.1]), "A", "B") is None
    assert inputs_difference(base, inputs("same", gamma=[0.1], beta=[0.2, 0.3]), "A",
                             "B") is None


def _run_of_two_sets():
    from modelops_runtime.local.results import FailureRecord, SimRecord, StudyRun
    from modelops_runtime.models import SimResult

    a, b = ParamSet.of({"beta": 0.2}, "a", index=0), ParamSet.of({"beta": 0.3}, "b", index=1)

    def result(outputs, pid=11):
        return SimResult(outputs=outputs, executor="isolated_warm", pid=pid,
                         process_task_count=2, venv_cache_hit=True, duration_s=0.5,
                         worker="tcp://127.0.0.1:1")

    return StudyRun(
        study="t", bundle=REF, param_sets=[a, b],
        sims=[SimRecord(set=b.id, seed=1, result=result({"peak": 3, "curve": [1, 2]})),
              SimRecord(set=a.id, seed=1, result=result({"peak": 1.5, "curve": [1]})),
              SimRecord(set=a.id, seed=2, result=result({"peak": float("nan"), "curve": []}))],
        failures=[FailureRecord(set=b.id, seed=2, error_type="SimulationError",
                                message="boom")],
        aggregate=None, nthreads={}, worker_pids={}, pool_stats={}, elapsed_s=1.0), a, b


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_results_table_has_one_row_per_set_and_seed(suffix, tmp_path):
    import csv

    from modelops_runtime.local.study.table import write_table

    run, a, b = _run_of_two_sets()
    path = tmp_path / f"runs{suffix}"
    assert write_table(run, path) == 4
    if suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        with path.open() as f:
            rows = list(csv.DictReader(f))
    assert [(r["set_id"], str(r["seed"])) for r in rows] == \
        [(a.id, "1"), (a.id, "2"), (b.id, "1"), (b.id, "2")]
    first, nan, _, failed = rows
    assert str(first["param.beta"]) == "0.2" and str(first["set_label"]) == "a"
    assert float(first["output.peak"]) == 1.5 and first["output.curve"] == "[1]"
    assert str(first["process_task_count"]) == "2" and first["executor"] == "isolated_warm"
    assert str(nan["output.peak"]) == "nan"
    assert failed["error_type"] == "SimulationError" and str(failed["ok"]) in ("False", "false")


def test_a_parquet_results_file_without_pyarrow_is_refused_before_anything_runs(tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from pathlib import Path\n"
            "from modelops_runtime.local.study.command import check_results_targets\n"
            "check_results_targets([Path('r.csv'), Path('r.json')])\n"
            "try:\n    check_results_targets([Path('r.parquet')])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.stdout.startswith("LocalModeError --results r.parquet: writing Parquet needs "
                                 "pyarrow"), out
    assert "or write --results r.csv instead" in out.stdout


def test_a_parquet_sets_file_without_pyarrow_says_what_to_do(tmp_path):
    pq.write_table(pa.table({"beta": [0.2]}), tmp_path / "sets.parquet")
    study = study_file(tmp_path, sets_file="sets.parquet")
    code = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
            "from modelops_runtime.local.study.studyfile import Study\n"
            f"try:\n    Study.load({str(study)!r})\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("LocalModeError study file "), out
    assert ("Parquet sets files need pyarrow, which is not installed here: pip install "
            "pyarrow (or modelops-runtime[parquet]), or give the sets as CSV") in out.stdout
