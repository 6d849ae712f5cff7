"""`modelops-runtime compare A.json B.json`: the command line a user runs on two results
files (files in the format `local --results` writes; the e2e tests write real ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "modelops-runtime")
BUNDLE = "sha256:" + "ab" * 32
WARM = "executor=isolated_warm max_process_reuse=1000"
FRESH = "executor=isolated_warm max_process_reuse=1"


def results(path: Path, outputs: dict[int, object], *, ptc: dict[int, int] | None = None,
            mode: str = WARM, beta: float = 0.3, executor: str = "isolated_warm",
            packages: list[str] = ("numlite==2.0",), failures: dict[int, str] = {}) -> Path:
    seeds = sorted(set(outputs) | set(failures))
    doc = {
        "format": 3, "mode": mode, "expected_workers": 2, "expected_threads": 2,
        "inputs": {"bundle": BUNDLE, "entrypoint": "m:sim", "aggregate": None,
                   "sets": {"params": {"beta": beta}}, "seeds": {"params": seeds}},
        "environments": {"d1": list(packages)},
        "sims": [{"seed": s, "set": "params", "result": {
            "outputs": out, "executor": executor, "pid": 100 + s % 2,
            "process_task_count": (ptc or {}).get(s, 1), "venv_cache_hit": True,
            "duration_s": 0.1, "env_digest": "d1"}} for s, out in outputs.items()],
        "failures": [{"seed": s, "set": "params", "error_type": e, "message": "x"}
                     for s, e in failures.items()],
    }
    path.write_text(json.dumps(doc))
    return path


def compare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "compare", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_a_changed_param_is_refused_with_one_line_naming_it(tmp_path):
    a = results(tmp_path / "a.json", {0: 1, 1: 2})
    b = results(tmp_path / "b.json", {0: 1, 1: 2}, beta=0.35)
    proc = compare(a, b)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines() == [
        f"error: not comparable: param 'beta' differs: 0.3 in {a}, 0.35 in {b}; compare "
        "runs of the same study"], proc
    assert proc.stdout == ""


def test_coverage_is_a_note_and_the_common_seeds_decide(tmp_path):
    a = results(tmp_path / "a.json", {0: 1, 1: 2, 2: 3})
    b = results(tmp_path / "b.json", {1: 2, 2: 3, 3: 4})
    proc = compare(a, b)
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"compare: note: 1 seed(s) of {a} are not in {b} (seeds 0); compared the 2 both cover",
        f"compare: note: 1 seed(s) of {b} are not in {a} (seeds 3); compared the 2 both cover",
        f"compare: all 2 seeds give the same outputs as {a}"], proc


def test_differences_broken_down_by_process_task_count_and_mode(tmp_path):
    # B reused processes: seeds 2 and 3 ran after other tasks and differ; 0 and 1 agree
    a = results(tmp_path / "a.json", {0: 1, 1: 2, 2: 3, 3: 4}, mode=FRESH)
    b = results(tmp_path / "b.json", {0: 1, 1: 2, 2: 30, 3: 40}, ptc={2: 2, 3: 2})
    proc = compare(a, b)
    assert proc.returncode == 3, proc
    lines = proc.stdout.splitlines()
    assert lines[0] == f"compare: 2 of 4 seeds give different outputs than {a} (seeds 2, 3)"
    assert lines[1] == (
        f"compare: by process_task_count: of the 2 differing seeds, 2 ran after other tasks "
        f"of their process in {b}, 0 in {a}; every differing seed ran after other tasks of "
        f"its process, and 2 of 2 seeds that were their process's first task in {b} and in "
        f"{a} agree: state carried between tasks of a process")
    assert lines[2] == "compare: this mode changes the results"

    # the same mode twice: not "this mode"
    c = results(tmp_path / "c.json", {0: 1, 1: 2, 2: 3, 3: 4})
    proc = compare(c, b)
    assert proc.returncode == 3
    assert "this mode changes the results" not in proc.stdout
    assert "both runs were in the same mode and still differ" in proc.stdout


def sets_results(path: Path, outputs: dict[tuple[str, int], object], *,
                 ptc: dict[tuple[str, int], int] | None = None, mode: str = WARM) -> Path:
    """A results file of a study of two parameter sets, s1 and s2."""
    sets = {"s1": {"beta": 0.3}, "s2": {"beta": 0.4}}
    doc = {
        "format": 3, "mode": mode, "expected_workers": 2, "expected_threads": 2,
        "inputs": {"bundle": BUNDLE, "entrypoint": "m:sim", "aggregate": None, "sets": sets,
                   "seeds": {s: sorted(seed for k, seed in outputs if k == s) for s in sets}},
        "environments": {"d1": ["numlite==2.0"]},
        "sims": [{"seed": seed, "set": set_id, "result": {
            "outputs": out, "executor": "isolated_warm", "pid": 100,
            "process_task_count": (ptc or {}).get((set_id, seed), 1), "venv_cache_hit": True,
            "duration_s": 0.1, "env_digest": "d1"}} for (set_id, seed), out in outputs.items()],
        "failures": [],
    }
    path.write_text(json.dumps(doc))
    return path


def test_a_study_of_several_sets_is_counted_in_set_seed_runs(tmp_path):
    """Issue #17's studies: the lines count (set, seed) runs, not seeds, and name each one
    set:seed (two sets × seeds 0-2: 6 runs, though only 3 seeds)."""
    keys = [(s, seed) for s in ("s1", "s2") for seed in range(3)]
    a = sets_results(tmp_path / "a.json", {k: 1 for k in keys}, mode=FRESH)
    b = sets_results(tmp_path / "b.json", {k: (5 if k[0] == "s2" and k[1] > 0 else 1)
                                           for k in keys[:-1] + [("s2", 2)]},
                     ptc={("s2", 1): 4, ("s2", 2): 5})
    proc = compare(a, b)
    assert proc.returncode == 3, proc
    assert proc.stdout.splitlines() == [
        f"compare: 2 of 6 (set, seed) runs give different outputs than {a} "
        "(set:seed s2:1, s2:2)",
        f"compare: by process_task_count: of the 2 differing runs, 2 ran after other tasks "
        f"of their process in {b}, 0 in {a}; every differing run ran after other tasks of "
        f"its process, and 4 of 4 runs that were their process's first task in {b} and in "
        f"{a} agree: state carried between tasks of a process",
        "compare: this mode changes the results"], proc
    assert "seed" not in proc.stdout.replace("(set, seed)", "").replace("set:seed", "")

    c = sets_results(tmp_path / "c.json", {k: 1 for k in keys[1:]})
    proc = compare(a, c)
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"compare: note: 1 run(s) of {a} are not in {c} (set:seed s1:0); compared the 5 both "
        "cover",
        f"compare: all 5 (set, seed) runs give the same outputs as {a}"], proc


def test_package_versions_are_set_side_by_side(tmp_path):
    a = results(tmp_path / "a.json", {0: 1, 1: 2}, executor="direct",
                packages=["numlite==1.0", "six==1.16"], mode="executor=direct")
    b = results(tmp_path / "b.json", {0: 1, 1: 5}, packages=["numlite==2.0"])
    proc = compare(a, b)
    assert proc.returncode == 3, proc
    assert proc.stdout.splitlines()[-1] == (
        f"compare: packages differ: numlite 1.0 ({a}, worker environment) vs 2.0 ({b}, "
        f"bundle venv); only in {a}: six")
    doc = json.loads(compare(a, b, "--json").stdout)
    assert doc["differs"] and doc["differing"] == ["1"] and doc["exit_code"] == 3
    assert doc["packages_differ"][0].startswith("numlite 1.0")


@pytest.mark.parametrize("content,problem", [
    (None, "FileNotFoundError"), ("{", "JSONDecodeError"),
    ('{"format": 99, "sims": []}', "results file format 99")])
def test_an_unreadable_file_is_one_error_line(tmp_path, content, problem):
    a = results(tmp_path / "a.json", {0: 1})
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    proc = compare(a, bad)
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: compare {bad}: not a results file"
                                                   if "format" not in problem else "error:")
    assert problem in lines[0]
