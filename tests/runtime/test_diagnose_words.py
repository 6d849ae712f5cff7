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


# -- issue 22: the verdict read on built step outcomes ---------------------------------------

import shlex  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from modelops_runtime.config import RuntimeConfig  # noqa: E402
from modelops_runtime.exitcodes import EXIT_DIFFERS, EXIT_FAILED, EXIT_OK  # noqa: E402
from modelops_runtime.local.diagnose.command import cost_warning  # noqa: E402
from modelops_runtime.local.diagnose.report import as_json  # noqa: E402
from modelops_runtime.local.diagnose.steps import planned_steps  # noqa: E402
from modelops_runtime.local.diagnose.verdict import (Facts,  # noqa: E402
                                                     needs_direct_one_process,
                                                     unexplained_self_difference)

SEEDS = range(8)
WORKER_ENV = ["dask==2026.8.0", "numlite==1.0", "modelops-runtime==0.1.0"]
VENV_1 = ["numlite==1.0"]
VENV_2 = ["numlite==2.0"]


def step(name, values, *, counts=None, executor="isolated_warm", packages=VENV_1,
         direct=False, index=1):
    """A step that ran: seed → output (``values``: a dict, or one value for every seed),
    seed → process_task_count (``counts``, default 1: every run its process's first)."""
    values = values if isinstance(values, dict) else {s: values for s in SEEDS}
    counts = counts or {}
    outcomes = {(SINGLE_SET, s): SeedOutcome(outputs=v, process_task_count=counts.get(s, 1),
                                             executor=executor, env_digest=executor)
                for s, v in values.items()}
    view = RunView(label=name, outcomes=outcomes, environments={executor: packages})
    return StepRun(step=Step(name, name, direct=direct), index=index, view=view, total=len(values))


def skipped(name, why):
    return StepRun(step=Step(name, name), index=0, skipped=why)


RACE = {s: (s if s % 3 else 100 + s) for s in SEEDS}     # a run read another run's file
RACE_AGAIN = {s: (s if s % 2 else 200 + s) for s in SEEDS}
CLEAN = {s: s for s in SEEDS}


def test_a_direct_mode_that_differs_from_itself_is_concurrency_when_one_process_is_stable():
    # debug-parallel, a model checkpointing through one fixed file in the shared temp dir
    # (failed before: "the model is not deterministic: the same mode, with a fresh process
    # per task, ..." and one-process was never run)
    runs = [step("your-mode", RACE, executor="direct", packages=WORKER_ENV, direct=True),
            step("your-mode-again", RACE_AGAIN, executor="direct", packages=WORKER_ENV,
                 direct=True),
            step("fresh-process", CLEAN), step("fresh-process-again", CLEAN),
            step("one-process", CLEAN, executor="direct", packages=WORKER_ENV, direct=True),
            step("one-process-again", CLEAN, executor="direct", packages=WORKER_ENV,
                 direct=True)]
    facts = Facts(requirements=["numlite"], user_direct=True)
    verdict = judge(runs, facts)
    assert verdict.findings[0].layer == "concurrency", verdict
    assert "fresh process per task" not in verdict.summary
    assert "several run at the same time in different processes" in verdict.summary
    assert any("one worker process, one task at a time, gives the same outputs twice" in e
               for e in verdict.findings[0].evidence), verdict
    assert shlex.split(verdict.next_command)[:2] == ["modelops-runtime", "local"]
    assert "worker.processes=1" in verdict.next_command


def test_before_one_process_ran_twice_the_search_asks_for_it():
    runs = [step("your-mode", RACE, executor="direct", packages=WORKER_ENV),
            step("your-mode-again", RACE_AGAIN, executor="direct", packages=WORKER_ENV)]
    assert unexplained_self_difference(runs) == "your-mode"


def test_a_mode_that_differs_from_itself_in_one_process_too_is_nondeterministic():
    runs = [step("your-mode", RACE, executor="direct", packages=WORKER_ENV),
            step("your-mode-again", RACE_AGAIN, executor="direct", packages=WORKER_ENV),
            step("one-process", RACE, executor="direct", packages=WORKER_ENV),
            step("one-process-again", RACE_AGAIN, executor="direct", packages=WORKER_ENV)]
    verdict = judge(runs, Facts(user_direct=True))
    assert verdict.findings[0].layer == "nondeterministic", verdict
    assert "fresh process per task" not in verdict.summary
    assert "ignores the seed" in verdict.summary
    assert any("differs from itself too" in e for e in verdict.findings[0].evidence)


def _prod_warm_race(direct_packages, *, one=CLEAN):
    runs = [step("your-mode", CLEAN, counts={s: 1 + s % 2 for s in SEEDS}),
            step("your-mode-again", CLEAN), step("fresh-process", CLEAN),
            step("fresh-venv", {s: s for s in range(4)}),
            step("direct", RACE, executor="direct", packages=direct_packages, direct=True)]
    if one is not None:
        runs.append(step("direct-one-process", one, executor="direct",
                         packages=direct_packages, direct=True))
    runs += [step("native-threads=2", CLEAN), step("one-process", CLEAN)]
    return runs


def test_a_direct_only_difference_with_equal_versions_is_not_the_worker_environment():
    # prod-warm, the same model: only direct's worker processes share the temp dir
    # (failed before: "the worker environment differs from the bundle's venv", with the
    # worker's own packages -- dask, the runtime -- as the "difference")
    facts = Facts(requirements=["numlite"])
    runs = _prod_warm_race(WORKER_ENV, one=None)
    assert needs_direct_one_process(runs, facts)
    verdict = judge(_prod_warm_race(WORKER_ENV), facts)
    assert verdict.findings[0].layer == "concurrency", verdict
    assert "executor=direct" in verdict.summary
    evidence = " ".join(verdict.findings[0].evidence)
    assert "the bundle's requirements have the same versions in both" in evidence
    assert "direct-one-process (executor=direct, one worker process" in evidence
    assert "worker environment differs" not in verdict.summary
    # the next step compares the two result files (your prod-warm mode is not affected)
    runs = _prod_warm_race(WORKER_ENV)
    for r in runs:
        r.results = Path(f"/out/{r.step.name}.json")
    verdict = judge(runs, facts)
    assert verdict.next_command == ("modelops-runtime compare /out/fresh-process.json "
                                    "/out/direct.json"), verdict
    assert "your mode is not affected" in verdict.next_why


def test_the_worker_environment_verdict_rests_on_the_bundles_requirement_versions():
    facts = Facts(requirements=["numlite"])
    versions = ["dask==2026.8.0", "numlite==2.0", "modelops-runtime==0.1.0"]
    runs = _prod_warm_race(versions, one=None)
    assert not needs_direct_one_process(runs, facts)
    verdict = judge(runs, facts)
    assert verdict.findings[0].layer == "worker_env", verdict
    assert "numlite 1.0 (fresh-process, bundle venv) vs 2.0 (direct, worker environment)" in (
        verdict.summary), verdict
    assert "dask" not in verdict.summary


def test_a_direct_difference_in_one_process_too_with_equal_versions_is_the_worker_process():
    verdict = judge(_prod_warm_race(WORKER_ENV, one=RACE), Facts(requirements=["numlite"]))
    assert verdict.findings[0].layer == "direct_process", verdict
    assert "same versions of its requirements" in verdict.summary


def test_no_step_that_ran_is_a_verdict_not_a_traceback():
    # failed before: LookupError: no reference step ran
    runs = [skipped("your-mode", "the local worker environment lacks numlite==1.0"),
            skipped("one-process", "the local worker environment lacks numlite==1.0")]
    verdict = judge(runs, Facts(user_direct=True))
    assert verdict.exit_code == EXIT_FAILED and "no step could run" in verdict.summary


def test_a_direct_mode_without_its_requirements_is_judged_on_the_warm_steps():
    runs = [skipped("your-mode", "the local worker environment lacks numlite==1.0"),
            step("fresh-process", CLEAN), step("native-threads=2", CLEAN),
            step("one-process", CLEAN)]
    verdict = judge(runs, Facts(user_direct=True))
    assert verdict.exit_code == EXIT_OK and verdict.findings == [], verdict
    lines = text(verdict, runs, 1.0)
    assert ("your-mode was not run: the local worker environment lacks numlite==1.0."
            in lines), lines


def test_state_in_a_direct_mode_is_process_state_named_against_fresh_process():
    later = {s: 1 + s % 2 for s in SEEDS}
    leaked = {s: s + (99 if later[s] > 1 else 0) for s in SEEDS}
    runs = [step("your-mode", leaked, counts=later, executor="direct", packages=WORKER_ENV),
            step("your-mode-again", leaked, counts=later, executor="direct",
                 packages=WORKER_ENV),
            step("fresh-process", CLEAN)]
    verdict = judge(runs, Facts(requirements=["numlite"], user_direct=True))
    assert verdict.findings[0].layer == "process_state", verdict
    assert "imported afresh for each run" in verdict.summary


def test_module_state_says_what_the_model_does_and_a_command_to_paste():
    later = {s: 1 + s % 2 for s in SEEDS}
    leaked = {s: s + (99 if later[s] > 1 else 0) for s in SEEDS}
    runs = [step("your-mode", leaked, counts=later), step("your-mode-again", leaked,
                                                         counts=later),
            step("fresh-process", CLEAN),
            step("direct", CLEAN, executor="direct", packages=WORKER_ENV)]
    replays = []

    def replay(*extra, sims=None, command="local"):
        replays.append(extra)
        return shlex.join(["modelops-runtime", command, "-f", "values-examples/prod-warm.yaml",
                           *[a for e in extra for a in ("--set", e)], "--study", "s"])

    verdict = judge(runs, Facts(requirements=["numlite"], replay=replay))
    assert verdict.findings[0].layer == "module_state"
    assert verdict.summary.startswith(
        "layer found: your model keeps something between runs in one process: the runs that "
        "differ are exactly those that were not their process's first")
    assert "worker.executor.maxProcessReuse=1" in verdict.next_command
    lines = text(verdict, runs, 1.0)
    at = lines.index(f"    {verdict.next_command}")
    assert lines[at - 1].startswith("  next: run every task in a new process"), lines


def test_the_reference_switched_to_exec_is_said_in_the_verdict_and_the_json():
    note = ("4 of 4 seeds differ between fresh-process forked from a template and a new "
            "interpreter per task (seeds 0, 1, 2, 3)")
    later = {s: 1 + s % 2 for s in SEEDS}
    leaked = {s: s + (99 if later[s] > 1 else 0) for s in SEEDS}
    runs = [step("your-mode", leaked, counts=later),
            step("your-mode-again", leaked, counts=later),
            step("fresh-process-exec", {s: s for s in range(4)}),
            step("fresh-process-template", {s: 1000 + s for s in SEEDS}),
            step("fresh-process", CLEAN),
            step("direct", CLEAN, executor="direct", packages=WORKER_ENV)]
    verdict = judge(runs, Facts(requirements=["numlite"], reference_note=note))
    assert verdict.findings[0].layer == "module_state", verdict
    assert verdict.reference == ("fresh-process from a new interpreter per task (exec), "
                                 "because " + note)
    doc = as_json(verdict, runs, 1.0)
    assert doc["reference"].startswith("fresh-process from a new interpreter per task (exec)")
    assert f"  reference: {verdict.reference}" in text(verdict, runs, 1.0)


def test_a_mode_that_forks_from_a_template_found_to_differ_is_told_to_use_exec():
    runs = [step("your-mode", {s: 1000 + s for s in SEEDS}),
            step("your-mode-again", {s: 2000 + s for s in SEEDS}),
            step("fresh-process-exec", {s: s for s in range(4)}),
            step("fresh-process", CLEAN), step("fresh-process-again", CLEAN)]
    facts = Facts(user_template=True, reference_note="4 of 4 seeds differ ...")
    verdict = judge(runs, facts)
    assert verdict.findings[0].layer == "template_fork", verdict
    assert "worker.executor.freshProcessFrom=exec" in verdict.next_command


def _launch(workers=4, nthreads=1):
    return SimpleNamespace(expected_workers=workers, rendered=SimpleNamespace(nthreads=nthreads))


def test_a_direct_mode_gets_the_fresh_process_comparison_in_the_bundles_venv():
    steps, skip = planned_steps(RuntimeConfig(executor_type="direct"), _launch())
    by = {s.name: s for s in steps}
    assert list(by) == ["your-mode", "your-mode-again", "fresh-process", "native-threads=2",
                        "one-process"], list(by)
    assert "worker.executor.type=isolated_warm" in by["fresh-process"].sets
    assert by["one-process"].direct and "worker.executor.type=isolated_warm" not in (
        by["one-process"].sets)
    assert set(skip) == {"fresh-venv"}


def test_a_direct_mode_without_its_requirements_plans_the_warm_steps():
    why = "the local worker environment lacks numlite==1.0"
    steps, skip = planned_steps(RuntimeConfig(executor_type="direct"), _launch(), why)
    assert [s.name for s in steps] == ["fresh-process", "native-threads=2", "one-process"]
    assert not any(s.direct for s in steps)
    assert all("worker.executor.type=isolated_warm" in s.sets for s in steps)
    assert skip["your-mode"] == why


def test_a_costly_fresh_process_is_announced_from_the_first_runs():
    mode = step("your-mode", CLEAN)
    mode.study_s = 0.8                       # 0.1 s a run
    sample = step("fresh-process-exec", {s: s for s in range(4)})
    sample.study_s = 2.4                     # 0.6 s a run: 6x
    ctx = SimpleNamespace()
    line = cost_warning(ctx, sample, mode, 300)
    assert line.startswith("diagnose: note: fresh-process is estimated at 180 s for 300 runs "
                           "(6× your mode's time per run"), line
    sample.study_s = 1.6                     # 4x: no note
    assert cost_warning(ctx, sample, mode, 300) == ""
    # the sample runs one task at a time; the step runs as many at once as your mode
    sample.study_s = 4.8                     # 1.2 s a run alone, 0.6 s with 2 at once: 6x
    assert "(6× your mode's time per run" in cost_warning(ctx, sample, mode, 300, parallel=2)


def test_fresh_venv_run_from_exec_is_said_in_the_reference():
    note = "4 of 4 seeds differ between fresh-venv forked from a template ..."
    runs = [step("your-mode", CLEAN), step("your-mode-again", CLEAN),
            step("fresh-process", CLEAN), step("fresh-venv-template", {s: 9 for s in SEEDS}),
            step("fresh-venv", CLEAN)]
    verdict = judge(runs, Facts(venv_note=note))
    assert verdict.findings == [], verdict           # the forked run is not the reference
    assert verdict.reference == ("fresh-process; fresh-venv from a venv built per task and a "
                                 "new interpreter (exec), because " + note)


def test_a_modified_cached_venv_is_named_from_the_fresh_process_preset():
    # your mode is fresh-process, so that step does not run: fresh-venv is read against your
    # mode (failed before: "no difference", fresh-venv compared with nothing)
    runs = [step("your-mode", CLEAN, packages=VENV_2), step("your-mode-again", CLEAN,
                                                           packages=VENV_2),
            step("fresh-venv", {s: s + 0.5 for s in SEEDS}), step("one-process", CLEAN,
                                                                 packages=VENV_2)]
    verdict = judge(runs, Facts(user_template=True, user_fresh=True))
    assert verdict.exit_code == EXIT_DIFFERS, verdict
    assert verdict.findings[0].layer == "cached_venv", verdict
    assert verdict.findings[0].pair == ("your-mode", "fresh-venv")
    assert any("numlite 2.0" in e for e in verdict.findings[0].evidence), verdict
