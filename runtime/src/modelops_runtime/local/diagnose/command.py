"""``modelops-runtime diagnose``: run the steps (diagnose.py) in order, skipping what the
evidence makes unnecessary, then print the verdict (verdict.py) and the matrix
(report.py). The argument parser is cli/diagnose.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from ...config import ExecutorType, FreshProcessFrom
from ...exitcodes import EXIT_FAILED
from ...errors import LocalModeError, ModelOpsError
from ..compare.runs import compare_outcomes, key_label
from .steps import (EXEC, FRESH_PROCESS, Context, Step, StepRun, after, again, describe_mode,
                    direct_one_process, planned_steps, prepare, reference_sample, run_step,
                    venv_sample)
from .report import as_json, html_page, text
from .verdict import (Facts, fresh_process_unstable, judge, needs_after, needs_direct_one_process,
                      needs_fresh_process_again, state_explains, unexplained_self_difference)
from ..cluster.stopping import sigterm_as_interrupt, stopped

EXIT_CODES = """exit codes:
  0    no difference: every seed gave the same outcome in every step
  1    diagnose could not run (bad input, every sim failed in your mode, a cluster failed)
  3    a layer was named (the verdict says which, with the evidence)
  130  Ctrl-C, 143 SIGTERM: the running step's cluster was stopped, no process is left"""

COST_FACTOR = 5   # warn before a step estimated at this many times your mode's study time


def _hint(sr: StepRun, first: StepRun | None) -> str:
    if first is None or first is sr or not sr.ran:
        return ""
    c = compare_outcomes(sr.view.outcomes, first.view.outcomes)
    return (f"; {len(c.differing)} of {len(c.common)} {c.words.counted} differ from "
            f"{first.step.name}"
            if c.differs else f"; same as {first.step.name}")


def uses_template(ctx: Context) -> bool:
    """fresh-process steps fork task processes from a template (the runtime's default)."""
    return ctx.config.fresh_process_from is FreshProcessFrom.template


def user_fresh(ctx: Context) -> bool:
    """Your mode is fresh-process: a new process per task in the cached venv."""
    c = ctx.config
    return (c.executor_type is ExecutorType.isolated_warm and c.max_process_reuse == 1
            and not c.force_fresh_venv)


def user_forks(ctx: Context) -> bool:
    return user_fresh(ctx) and uses_template(ctx)


def cost_warning(ctx: Context, sample: StepRun, mode: StepRun | None, sims: int,
                 parallel: int = 1) -> str:
    """One line when ``sims`` tasks as slow as ``sample``'s (run one at a time; the step
    runs ``parallel`` at once, as your mode does) are estimated at >= COST_FACTOR times your
    mode's study time ("" otherwise, or without the figures)."""
    if mode is None or not mode.ran or not sample.ran or not mode.total or not sample.total:
        return ""
    per_mode, per_sample = mode.study_s / mode.total, sample.study_s / sample.total / parallel
    estimate = per_sample * sims
    if per_mode <= 0 or per_sample < COST_FACTOR * per_mode:
        return ""
    return (f"diagnose: note: fresh-process is estimated at {estimate:.0f} s for {sims} runs "
            f"({per_sample / per_mode:.0f}× your mode's time per run, from the first "
            f"{sample.total} runs in a new process each); fewer seeds (--sims) make diagnose "
            "quicker")


def run_steps(ctx: Context, steps: list[Step], skipped: dict[str, str]) -> list[StepRun]:
    runs: list[StepRun] = []
    facts = facts_of(ctx, skipped)

    def do(step: Step) -> StepRun:
        sr = run_step(ctx, step, len([r for r in runs if r.index]) + 1)
        runs.append(sr)
        if sr.ran:
            ctx.say(f"diagnose: step {sr.index} {sr.step.name}: {sr.total - sr.failures} ok, "
                    f"{sr.failures} failed in {sr.elapsed_s:.1f} s"
                    + _hint(sr, runs[0] if runs[0].ran else None))
        return sr

    def skip(step: Step, why: str) -> None:
        runs.append(StepRun(step=step, index=0, skipped=why))
        ctx.say(f"diagnose: {step.name} is not run: {why}")

    mode: StepRun | None = None
    checked = False
    stop = ""
    for step in steps:
        if stop and not step.name.startswith("one-process"):
            skip(step, stop)
            continue
        if step.name == "fresh-venv" and state_explains(by_name(runs)):
            skip(step, "fresh-process already explains the difference (a fresh venv is "
                       "also a fresh process)")
            continue
        if (step.name.startswith("native-threads=") and step.direct
                and unexplained_self_difference(runs, False) == "your-mode"):
            skip(step, "your mode differs from itself, so a difference with another thread "
                       "count could not be told from it")
            continue
        if step.name == "fresh-process" and uses_template(ctx):
            fresh_process_checked(ctx, step, runs, do, mode)
        elif step.name == "fresh-venv" and uses_template(ctx):
            fresh_venv_checked(ctx, step, runs, do)
        else:
            done = do(step)
            if step.name == "your-mode":
                mode = done
        if len([r for r in runs if r.ran]) and not checked:
            checked = every_sim_failed(ctx, next(r for r in runs if r.ran))
        if step.name == "fresh-process" and needs_fresh_process_again(runs):
            do(again(by_name(runs)["fresh-process"].step))
        if step.name == "your-mode-again" and user_forks(ctx):
            mode_checked(ctx, runs, do)
        if step.name == "your-mode-again" or step.name == "fresh-process":
            if fresh_process_unstable(runs):
                stop = ("your model gives other results for the same seed in a fresh "
                        "process per task: only one process, twice, can still tell "
                        "concurrency from a model that ignores its seed")
        if step.name == "direct" and needs_direct_one_process(runs, facts):
            do(direct_one_process())
        if step.name == "one-process" and unexplained_self_difference(
                runs, bool(ctx.reference_note and user_forks(ctx))):
            ran = by_name(runs).get("one-process")
            if ran is not None:
                do(again(ran.step))
    first = needs_after(runs, judge(runs, facts_of(ctx, skipped)))
    if first is not None:
        do(after(by_name(runs)[first].step))
    for name, why in skipped.items():
        runs.append(StepRun(step=Step(name, "(not run)"), index=0, skipped=why))
    return runs


def every_sim_failed(ctx: Context, first: StepRun) -> bool:
    """Raise when every sim of the first step that ran failed: nothing to compare."""
    if first.failures == first.total:
        raise LocalModeError(
            f"every one of the {first.total} sims failed in "
            f"{'your mode' if first.step.name == 'your-mode' else first.step.name}, so there is "
            f"nothing to compare (first: {first.first_failure}); fix the model or the study "
            f"first (step logs: {ctx.out_dir})")
    return True


def fresh_process_checked(ctx: Context, step: Step, runs: list[StepRun], do, mode) -> None:
    """fresh-process, its reference checked: the first seeds in a new interpreter each
    (exec) against the template fork; on a difference, fresh-process again from exec (and
    every later fresh-process step)."""
    sample = do(reference_sample(step))
    warning = cost_warning(ctx, sample, mode, sims_of(ctx, runs), parallel(ctx))
    if warning:
        ctx.say(warning)
    fork = do(step)
    if blame_template(ctx, fork, sample, "fresh-process forked from a template", do, step):
        fork.step = Step("fresh-process-template", "fresh-process forked from a template "
                         "(differs from a new interpreter)", fork.step.sets)


def parallel(ctx: Context) -> int:
    """How many tasks your topology runs at once on this machine (the samples run one)."""
    return max(1, min(ctx.launch.expected_threads if ctx.launch else 1, os.cpu_count() or 1))


def mode_checked(ctx: Context, runs: list[StepRun], do) -> None:
    """Your mode forks task processes from a template: the first seeds in a new
    interpreter each against it; on a difference, fresh-process from exec is the reference."""
    mine = by_name(runs).get("your-mode")
    sample = do(reference_sample())
    if mine is not None:
        blame_template(ctx, mine, sample, "your mode (forked from a template)", do,
                       Step("fresh-process", "a new interpreter per task (the reference)",
                            FRESH_PROCESS))


def fresh_venv_checked(ctx: Context, step: Step, runs: list[StepRun], do) -> None:
    """fresh-venv, checked as fresh-process is, where the check can change the verdict: its
    tasks fork from a template in one uv build per worker process. A template found to
    differ for this bundle → fresh-venv runs from exec (a venv built per task and a new
    interpreter) at once. Else fresh-venv runs forked; if it agrees with the forked step
    whose template was checked, the plain way could not differ (docs/diagnose.md) and is
    not run; if it differs, the first seeds the plain way decide (on a difference,
    fresh-venv runs from exec)."""
    plain = replace(step, sets=(*step.sets, *EXEC))
    if ctx.fresh_exec:
        ctx.venv_note = ("fresh-process's template fork differed from a new interpreter "
                         "per task for this bundle")
        do(plain)
        return
    fork = do(step)
    base = by_name(runs).get(ctx.template_agreed)
    if base is not None and fork.ran:
        c = compare_outcomes(fork.view.outcomes, base.view.outcomes)
        if not c.differs:
            why = (f"fresh-venv agrees with {base.step.name} ({len(c.common)} "
                   f"{c.words.counted}), whose template fork agreed with a new interpreter "
                   "per task: a venv built by uv per task could differ only through that fork")
            runs.append(StepRun(step=venv_sample(), index=0, skipped=why))
            ctx.say(f"diagnose: {venv_sample().name} is not run: {why}")
            return
    sample = do(venv_sample())
    if blame_template(ctx, fork, sample, "fresh-venv forked from a template in a shared "
                      "venv build", do, plain, venv=True):
        fork.step = Step("fresh-venv-template", "fresh-venv forked from a template (differs "
                         "from a venv built per task and a new interpreter)", fork.step.sets)


def blame_template(ctx: Context, fork: StepRun, sample: StepRun, what: str, do,
                   reference: Step, venv: bool = False) -> bool:
    """True when ``fork`` differs from ``sample`` (the same seeds, a new interpreter each):
    ``reference`` then runs from exec, and the template is named only if exec agrees with
    itself on the sample's seeds (a model that differs from itself is not the template's).
    ``venv``: the fresh-venv check (later fresh-process steps keep their way)."""
    if not (sample.ran and fork.ran):
        return False
    c = compare_outcomes(fork.view.outcomes, sample.view.outcomes)
    if not c.differs:
        if not venv:
            ctx.template_agreed = fork.step.name
        return False
    if not venv:
        ctx.fresh_exec = True
    ctx.say(f"diagnose: {len(c.differing)} of {len(c.common)} {c.words.counted} differ "
            f"between {what} and a new interpreter per task: the reference runs from exec")
    exec_run = do(reference)
    if exec_run.ran:
        itself = compare_outcomes(exec_run.view.outcomes, sample.view.outcomes)
        if itself.differs:
            ctx.say("diagnose: a new interpreter per task differs from itself too: the "
                    "template is not what differs")
            if not venv:
                ctx.exec_unstable = (
                    f"a new interpreter per task differs from itself: {len(itself.differing)} "
                    f"of {len(itself.common)} {itself.words.counted} differ between "
                    f"{sample.step.name} and {exec_run.step.name} (both from exec: "
                    f"{itself.words.labels} {', '.join(map(key_label, itself.differing[:8]))})")
            return True
    note = (f"{len(c.differing)} of {len(c.common)} {c.words.counted} differ between {what} "
            f"and a new interpreter per task ({c.words.labels} "
            f"{', '.join(map(key_label, c.differing[:8]))}), which agrees with itself")
    if venv:
        ctx.venv_note = note
    else:
        ctx.reference_note = note
    ctx.say(f"diagnose: reference: exec, because {note}")
    return True


def sims_of(ctx: Context, runs: list[StepRun]) -> int:
    first = next((r for r in runs if r.ran and r.step.sims is None), None)
    return ctx.sims or (first.total if first else 0)


def by_name(runs: list[StepRun]) -> dict[str, StepRun]:
    return {r.step.name: r for r in runs if r.ran}


def facts_of(ctx: Context, skipped: dict[str, str]) -> Facts:
    return Facts(requirements=ctx.requirements,
                 user_direct=ctx.config.executor_type is ExecutorType.direct,
                 user_template=user_forks(ctx), user_fresh=user_fresh(ctx),
                 reference_note=ctx.reference_note, exec_unstable=ctx.exec_unstable,
                 validate_deps=ctx.config.validate_deps,
                 venv_note=ctx.venv_note,
                 skipped=skipped, replay=ctx.replay)


def main(args: argparse.Namespace) -> int:
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if args.sims is not None and args.sims < 1:
        print("error: --sims must be >= 1", file=sys.stderr)
        return EXIT_FAILED
    restore = sigterm_as_interrupt()
    t0 = time.perf_counter()
    try:
        ctx = prepare(args.study, args.values, args.set, sims=args.sims, chart=args.chart,
                      state_dir=args.state_dir, out_dir=args.out, release=args.release,
                      say=say, start_timeout=args.start_timeout,
                      results_store=args.results_store, retry_failed=args.retry_failed)
        steps, skipped = planned_steps(ctx.config, ctx.launch, ctx.direct_missing)
        if ctx.direct_missing:
            say(f"diagnose: your mode runs the model in the worker environment, but "
                f"{ctx.direct_missing}; the steps run the bundle in its own venv instead")
        say(f"diagnose: study {ctx.study.name}, "
            f"{ctx.sims or 'the study' + chr(39) + 's'} seeds; your mode: "
            f"{describe_mode(ctx.config, ctx.launch)}")
        say(f"diagnose: steps: {', '.join(s.name for s in steps)}"
            + (f" (skipped: {', '.join(skipped)})" if skipped else "")
            + f"; results and logs in {ctx.out_dir}")
        runs = run_steps(ctx, steps, skipped)
        verdict = judge(runs, facts_of(ctx, skipped))
        elapsed = time.perf_counter() - t0
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(html_page(verdict, runs, elapsed, ctx.study.name))
        if args.json:
            doc = as_json(verdict, runs, elapsed)
            doc["report"] = str(args.report) if args.report else None
            print(json.dumps(doc, indent=1))
        else:
            for line in text(verdict, runs, elapsed):
                print(line)
            if args.report:
                print(f"report: {args.report}")
        return verdict.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        return stopped(exc, "the running step's cluster")
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        restore()
