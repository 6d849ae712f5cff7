"""``modelops-runtime diagnose``: run the steps (diagnose.py) in order, skipping what the
evidence makes unnecessary, then print the verdict (verdict.py) and the matrix
(report.py). The argument parser is cli/diagnose.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ...exitcodes import EXIT_FAILED
from ...errors import LocalModeError, ModelOpsError
from ..compare.runs import compare_outcomes
from .steps import FRESH_PROCESS, Context, Step, StepRun, describe_mode, planned_steps, prepare, run_step
from .report import as_json, html_page, text
from .verdict import (judge, needs_fresh_process_again, nondeterministic,
                               state_explains)
from ..cluster.stopping import sigterm_as_interrupt, stopped

EXIT_CODES = """exit codes:
  0    no difference: every seed gave the same outcome in every step
  1    diagnose could not run (bad input, every sim failed in your mode, a cluster failed)
  3    a layer was named (the verdict says which, with the evidence)
  130  Ctrl-C, 143 SIGTERM: the running step's cluster was stopped, no process is left"""


def _hint(sr: StepRun, first: StepRun | None) -> str:
    if first is None or first is sr or not sr.ran:
        return ""
    c = compare_outcomes(sr.view.outcomes, first.view.outcomes)
    return (f"; {len(c.differing)} of {len(c.common)} {c.words.counted} differ from "
            f"{first.step.name}"
            if c.differs else f"; same as {first.step.name}")


def run_steps(ctx: Context, steps: list[Step], skipped: dict[str, str]) -> list[StepRun]:
    runs: list[StepRun] = []

    def do(step: Step) -> StepRun:
        sr = run_step(ctx, step, len([r for r in runs if r.index]) + 1)
        runs.append(sr)
        if sr.ran:
            ctx.say(f"diagnose: step {sr.index} {step.name}: {sr.total - sr.failures} ok, "
                    f"{sr.failures} failed in {sr.elapsed_s:.1f} s"
                    + _hint(sr, runs[0] if runs[0].ran else None))
        return sr

    def skip(step: Step, why: str) -> None:
        runs.append(StepRun(step=step, index=0, skipped=why))
        ctx.say(f"diagnose: {step.name}: skipped: {why}")

    first = do(steps[0])
    if first.ran and first.failures == first.total:
        raise LocalModeError(
            f"every one of the {first.total} sims failed in your mode, so there is nothing to "
            f"compare (first: {first.first_failure}); fix the model or the study first "
            f"(step logs: {ctx.out_dir})")
    stop = ""
    for step in steps[1:]:
        if stop:
            skip(step, stop)
            continue
        if step.name == "fresh-venv" and state_explains(runs_by_name(runs)):
            skip(step, "fresh-process already explains the difference (a fresh venv is "
                       "also a fresh process)")
            continue
        do(step)
        if step.name in ("fresh-process", "your-mode-again"):
            if step.name == "fresh-process" and needs_fresh_process_again(runs):
                do(Step("fresh-process-again", "fresh-process again (is the model itself "
                        "deterministic?)", FRESH_PROCESS))
            if nondeterministic(runs) and (step.name == "fresh-process" or
                                           "fresh-process" in skipped):
                stop = "the model is not deterministic: no other layer can be judged"
    for name, why in skipped.items():
        runs.append(StepRun(step=Step(name, "(your mode already)"), index=0, skipped=why))
    return runs


def runs_by_name(runs: list[StepRun]) -> dict[str, StepRun]:
    return {r.step.name: r for r in runs if r.ran}


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
        steps, skipped = planned_steps(ctx.config, ctx.launch)
        say(f"diagnose: study {ctx.study.name}, "
            f"{ctx.sims or 'the study' + chr(39) + 's'} seeds; your mode: "
            f"{describe_mode(ctx.config, ctx.launch)}")
        say(f"diagnose: steps: {', '.join(s.name for s in steps)}"
            + (f" (skipped: {', '.join(skipped)})" if skipped else "")
            + f"; results and logs in {ctx.out_dir}")
        runs = run_steps(ctx, steps, skipped)
        verdict = judge(runs)
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
