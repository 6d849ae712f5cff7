"""The verdict of ``diagnose``: which pairs of steps differ, read as a signature.

| which pairs differ (seed by seed)                                         | layer |
|---|---|
| fresh-process vs fresh-process-again (or your mode vs itself, unexplained) | nondeterministic model |
| your mode vs fresh-process, only seeds that ran after other tasks of their process; direct agrees with fresh-process | module state carried between tasks of a warm process |
| the same, and direct differs too (again only seeds run after others)       | process state that survives re-importing the bundle |
| fresh-process vs fresh-venv                                               | cached venv (stale or modified) |
| direct vs the warm reference, package sets differ                         | worker environment differs from the bundle's venv |
| fresh-process vs native-threads=N                                         | native threads |
| fresh-process vs one-process                                              | concurrency between processes |
| none                                                                      | not reproduced |

The warm reference is fresh-process (or fresh-venv when the cached venv was found at
fault): the step with the fewest layers left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from ...exitcodes import EXIT_DIFFERS, EXIT_OK
from ..compare.runs import Comparison, Words, compare_outcomes, key_label, package_differences
from .steps import StepRun


NOT_THREADS = ("the runtime never runs two tasks in one Python process at once (direct "
               "serialises a worker process's tasks, isolated_warm gives each Dask thread "
               "its own warm process), so Dask's --nthreads cannot trigger a thread-unsafe "
               "module-level object: only native threads can, and they were varied")


class Finding(BaseModel):
    layer: str                 # nondeterministic, module_state, process_state, warm_state,
                               # cached_venv, worker_env, native_threads, concurrency
    headline: str              # the plain-language verdict
    evidence: list[str] = Field(default_factory=list)
    pair: tuple[str, str]      # the two steps whose difference names it


class Verdict(BaseModel):
    findings: list[Finding]
    summary: str
    next_steps: list[str] = Field(default_factory=list)
    exit_code: int


def _runs(runs: Sequence[StepRun]) -> dict[str, StepRun]:
    return {r.step.name: r for r in runs if r.ran}


def pair(runs: Mapping[str, StepRun], before: str, now: str) -> Comparison | None:
    a, b = runs.get(before), runs.get(now)
    if a is None or b is None:
        return None
    return compare_outcomes(b.view.outcomes, a.view.outcomes)


def _keys(keys: Sequence, shown: int = 12) -> str:
    return ", ".join(key_label(k) for k in keys[:shown]) + (" ..." if len(keys) > shown else "")


def _differ_line(c: Comparison, before: str, now: str) -> str:
    w = c.words
    return (f"{len(c.differing)} of {len(c.common)} {w.counted} differ between {before} and "
            f"{now}: {w.labels} {_keys(c.differing)}")


def _reuse_line(c: Comparison, now: str) -> str:
    later, w = c.after_other_tasks("now"), c.words
    agree, firsts = c.first_tasks_agree()
    line = (f"{len(later)} of the {len(c.differing)} differing {w.many} ran after other tasks "
            f"of their process in {now} (process_task_count > 1)")
    if firsts:
        line += f"; {agree} of the {firsts} {w.many} that were their process's first task agree"
    return line


def reference(runs: Mapping[str, StepRun]) -> str:
    """The warm step with the fewest layers left that ran."""
    for name in ("fresh-process", "your-mode"):
        if name in runs:
            return name
    raise LookupError("no reference step ran")


def state_explains(runs: Mapping[str, StepRun]) -> bool:
    """Your mode differs from fresh-process only on seeds that ran after other tasks of
    their process (in each run of your mode)."""
    if "fresh-process" not in runs:
        return False
    found = False
    for mine in ("your-mode", "your-mode-again"):
        c = pair(runs, "fresh-process", mine)
        if c is None or not c.differs:
            continue
        found = True
        if set(c.differing) - set(c.after_other_tasks("now")):
            return False
    return found


def needs_fresh_process_again(runs: Sequence[StepRun]) -> bool:
    """Your mode differs from itself, and process reuse does not explain it."""
    r = _runs(runs)
    c = pair(r, "your-mode", "your-mode-again")
    return bool(c and c.differs and "fresh-process" in r and not state_explains(r))


def nondeterministic(runs: Sequence[StepRun]) -> Finding | None:
    r = _runs(runs)
    for before, now in (("fresh-process", "fresh-process-again"),
                        ("your-mode", "your-mode-again")):
        c = pair(r, before, now)
        if c is None or not c.differs:
            continue
        if before == "your-mode" and ("fresh-process" in r or state_explains(r) or
                                      c.explained_by_reuse()):
            continue   # explained (or to be decided) by fresh-process
        return Finding(
            layer="nondeterministic",
            headline=("the model is not deterministic: the same mode, with a fresh process "
                      "per task, gives other outputs for the same seeds. Something in the "
                      "model ignores the seed (an unseeded RNG, time, os.urandom, dict/set "
                      "order of objects, an external service)"),
            evidence=[_differ_line(c, before, now),
                      "no state can be carried between tasks there: every task ran as the "
                      "first of its process" if before == "fresh-process" else
                      "process reuse does not explain it"],
            pair=(before, now))
    return None


def judge(all_runs: Sequence[StepRun]) -> Verdict:
    r = _runs(all_runs)
    findings: list[Finding] = []
    nd = nondeterministic(all_runs)
    if nd is not None:
        findings.append(nd)
        return _verdict(findings, all_runs)
    ref = reference(r)
    warm_state = None
    if state_explains(r):
        c = pair(r, "fresh-process", "your-mode")
        if not c.differs:
            c = pair(r, "fresh-process", "your-mode-again")
        evidence = [_differ_line(c, "fresh-process", "your-mode"), _reuse_line(c, "your-mode")]
        again = pair(r, "your-mode", "your-mode-again")
        if again is not None and again.differs:
            evidence.append(f"your mode also differs from itself ({len(again.differing)} "
                            f"{again.words.counted}): which {again.words.many} a process ran "
                            "before depends on scheduling")
        warm_state = Finding(layer="warm_state", headline="", evidence=evidence,
                             pair=("fresh-process", "your-mode"))
    mine = pair(r, "fresh-process", "your-mode")
    if warm_state is None and nd is None and mine is not None and mine.differs:
        findings.append(Finding(
            layer="warm_process",
            headline=("your mode gives other results than a fresh process per task, also for "
                      "seeds that were the first task of their process: the warm-process "
                      "layer changes them, but not only through state carried between tasks"),
            evidence=[_differ_line(mine, "fresh-process", "your-mode"),
                      _reuse_line(mine, "your-mode")],
            pair=("fresh-process", "your-mode")))
    venv = pair(r, "fresh-process", "fresh-venv")
    if venv is not None and venv.differs:
        packages = package_differences(r["fresh-process"].view, r["fresh-venv"].view)
        findings.append(Finding(
            layer="cached_venv",
            headline=("the cached venv is at fault: a freshly built venv of the same "
                      "requirements gives other results (the cached one is stale or was "
                      "modified after its build, or the requirements resolve differently "
                      "today)"),
            evidence=[_differ_line(venv, "fresh-process", "fresh-venv"),
                      *(["packages: " + "; ".join(packages)] if packages else
                        ["the package versions are the same: a file inside the cached venv "
                         "differs (modified or deleted after the build)"]),
                      "keep worker.executor.validateDeps: true (it rebuilds a venv whose "
                      "installed files changed)"],
            pair=("fresh-process", "fresh-venv")))
        ref = "fresh-venv"
    direct = pair(r, ref, "direct")
    if warm_state is not None:
        if direct is None:
            skipped = next((s.skipped for s in all_runs if s.step.name == "direct"), "")
            warm_state.layer = "warm_state"
            warm_state.headline = ("state carried between tasks of a warm process: a task's "
                                   "result depends on the tasks its process ran before")
            if skipped:
                warm_state.evidence.append(f"the direct step, which tells module state from "
                                           f"process state, could not run: {skipped}")
        elif not direct.differs:
            warm_state.layer = "module_state"
            warm_state.headline = ("module state carried between tasks of a warm process: a "
                                   "module-level variable of the bundle (a list, a cache, a "
                                   "counter) changes the results of later tasks; re-importing "
                                   "the bundle per task (direct) removes it")
            warm_state.evidence.append(f"direct (bundle modules re-imported per task, the "
                                       f"process kept) agrees with {ref}")
        else:
            warm_state.layer = "process_state"
            warm_state.headline = ("process state that survives re-importing the bundle: "
                                   "something outside the bundle's modules (a third-party "
                                   "module's attribute or global RNG, builtins, the "
                                   "environment, a thread) carries state between tasks")
            warm_state.evidence.append(f"direct differs from {ref} too, although it "
                                       "re-imports the bundle per task: "
                                       + _reuse_line(direct, "direct"))
        findings.insert(0, warm_state)
    elif direct is not None and direct.differs:
        packages = package_differences(r[ref].view, r["direct"].view)
        findings.append(Finding(
            layer="worker_env",
            headline=("the worker environment differs from the bundle's venv: executor=direct "
                      "runs the model on the worker image's packages and gives other results"),
            evidence=[_differ_line(direct, ref, "direct"),
                      *(["packages: " + "; ".join(packages)] if packages else
                        ["the package versions are the same: the difference is elsewhere "
                         "(environment variables, the working directory, files next to the "
                         "worker)"]),
                      "pin the bundle's requirements (==) to what you validated, or install "
                      "the same versions in the worker image"],
            pair=(ref, "direct")))
    for name in r:
        if name.startswith("native-threads="):
            c = pair(r, reference(r), name)
            if c is not None and c.differs:
                findings.append(Finding(
                    layer="native_threads",
                    headline=(f"native threads change the results: with {name.split('=')[1]} "
                              "thread(s) for BLAS/OpenMP/NumExpr/Numba the model gives other "
                              "outputs (floating-point reductions depend on the thread count)"),
                    evidence=[_differ_line(c, reference(r), name),
                              "set worker.executor.nativeThreads to the value you validated "
                              "with (1 is the default)"],
                    pair=(reference(r), name)))
    c = pair(r, reference(r), "one-process")
    if c is not None and c.differs:
        findings.append(Finding(
            layer="concurrency",
            headline=("concurrency between processes: the results change when tasks run in "
                      "parallel processes instead of one at a time (shared files outside the "
                      "task's scratch directory, an external service, ordering)"),
            evidence=[_differ_line(c, reference(r), "one-process")],
            pair=(reference(r), "one-process")))
    return _verdict(findings, all_runs)


def _verdict(findings: list[Finding], all_runs: Sequence[StepRun]) -> Verdict:
    if findings:
        first = findings[0]
        summary = f"layer found: {first.headline}"
        return Verdict(findings=findings, summary=summary, exit_code=EXIT_DIFFERS)
    ran = [s.step.name for s in all_runs if s.ran]
    w = Words.of([k for s in all_runs if s.ran for k in s.view.outcomes])
    every = "every seed gives" if w.one == "seed" else "every (set, seed) run gives"
    return Verdict(
        findings=[],
        summary=(f"no difference: {every} the same outcome in every step "
                 f"({', '.join(ran)}); the bug was not reproduced in any mode"),
        next_steps=[
            "run more seeds (--sims) or the parameters and values of the run that looked wrong",
            f"note: {NOT_THREADS}",
            "a difference that needs production load, other nodes or external services is "
            "outside what these modes vary: compare your cluster's --results with a "
            "local one (`modelops-runtime compare`)"],
        exit_code=EXIT_OK)
