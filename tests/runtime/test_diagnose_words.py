"""diagnose's verdict and matrix count what the study ran: seeds for a study of one parameter
set, (set, seed) runs labelled set:seed for a study of several (issue #17). The steps'
outcomes are built here as a results file would hold them; the e2e suite runs real ones."""

from __future__ import annotations

from modelops_runtime.local.diagnose.steps import Step, StepRun
from modelops_runtime.local.diagnose.report import text
from modelops_runtime.local.diagnose.verdict import judge
from modelops_runtime.local.results import SINGLE_SET, RunView, SeedOutcome

STEPS = ("your-mode", "your-mode-again", "fresh-process")


def _runs(keys, leaked) -> list[StepRun]:
    """Three steps; your mode (twice) gives 99 for ``leaked`` keys, which ran after other
    tasks of their process; fresh-process gives 1 everywhere."""
    runs = []
    for i, name in enumerate(STEPS):
        warm = name != "fresh-process"
        outcomes = {k: SeedOutcome(outputs=99 if warm and k in leaked else 1,
                                   process_task_count=4 if warm and k in leaked else 1)
                    for k in keys}
        runs.append(StepRun(step=Step(name, name), index=i, view=RunView(label=name,
                                                                          outcomes=outcomes)))
    return runs


def _lines(runs) -> list[str]:
    verdict = judge(runs)
    assert verdict.findings and verdict.findings[0].layer == "warm_state", verdict
    return text(verdict, runs, 1.0)


def test_a_study_of_several_sets_is_counted_in_set_seed_runs():
    keys = [(s, seed) for s in ("s1", "s2") for seed in range(3)]
    lines = _lines(_runs(keys, {("s2", 1), ("s2", 2)}))
    out = "\n".join(lines)
    assert ("  evidence: 2 of 6 (set, seed) runs differ between fresh-process and your-mode: "
            "set:seed s2:1, s2:2") in lines, out
    assert ("  evidence: 2 of the 2 differing runs ran after other tasks of their process in "
            "your-mode (process_task_count > 1); 4 of the 4 runs that were their process's "
            "first task agree") in lines, out
    assert any(line.startswith("set:seed × step (A = the outcome") for line in lines), out
    assert any(line.split() == ["set:seed", *STEPS] for line in lines), out
    assert any(line.split() == ["s2:1", "A+", "A+", "B"] for line in lines), out


def test_a_study_of_one_set_is_counted_in_seeds():
    keys = [(SINGLE_SET, seed) for seed in range(3)]
    lines = _lines(_runs(keys, {(SINGLE_SET, 2)}))
    out = "\n".join(lines)
    assert ("  evidence: 1 of 3 seeds differ between fresh-process and your-mode: seeds 2"
            in lines), out
    assert any(line.startswith("seed × step (A = the outcome") for line in lines), out
    assert any(line.split() == ["seed", *STEPS] for line in lines), out
