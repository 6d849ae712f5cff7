"""The verdict of ``diagnose``: which pairs of steps differ, read as a signature.

| which pairs differ (seed by seed)                                         | layer |
|---|---|
| a mode vs itself, while one-process agrees with itself (and the reference) | concurrency between processes |
| a mode vs itself, and one-process too (or one process is all there is)    | nondeterministic model |
| your mode vs fresh-process, only seeds that ran after other tasks of their process; direct agrees with fresh-process | module state carried between tasks of a warm process |
| the same, and direct differs too (or your mode is direct)                 | process state that survives re-importing the bundle |
| fresh-process (template fork) vs a new interpreter, and your mode forks   | the template fork |
| fresh-process (or your mode, when it is fresh-process) vs fresh-venv      | cached venv (stale or modified) |
| direct vs the reference, the bundle's own requirements in other versions  | worker environment differs from the bundle's venv |
| direct vs the reference, same versions; direct in one process agrees      | concurrency between direct's worker processes |
| fresh-process vs native-threads=N                                         | native threads |
| fresh-process vs one-process                                              | concurrency between processes |
| a step vs itself rerun after the other steps (`-after`)                  | state left outside the run |
| none                                                                      | not reproduced |

The reference is fresh-process (in a new interpreter per task when the template fork was
found to differ from it; fresh-venv when the cached venv was found at fault): the step with
the fewest layers left. The sentences and the commands to paste are in advice.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from ...exitcodes import EXIT_DIFFERS, EXIT_FAILED, EXIT_OK
from ..compare.runs import Comparison, compare_outcomes, key_label, package_differences
from . import advice
from .steps import StepRun


class Finding(BaseModel):
    layer: str                 # nondeterministic, concurrency, module_state, process_state,
                               # warm_state, warm_process, template_fork, cached_venv,
                               # worker_env, direct_process, native_threads, outside_state
    headline: str              # what the model does, one sentence a modeller understands
    evidence: list[str] = Field(default_factory=list)
    pair: tuple[str, str]      # the two steps whose difference names it


class Verdict(BaseModel):
    findings: list[Finding]
    summary: str
    reference: str = ""        # the step read as the reference, and why that way
    next_command: str = ""     # the next step, a command to paste
    next_why: str = ""         # what that command shows or does
    next_steps: list[str] = Field(default_factory=list)
    exit_code: int


@dataclass
class Facts:
    """What the verdict knows beyond the runs: the user's mode and the commands to suggest."""

    requirements: Sequence[str] = ()       # the bundle's own requirement names
    user_direct: bool = False              # your mode is executor=direct
    user_template: bool = False            # your mode forks task processes from a template
    user_fresh: bool = False               # your mode is fresh-process (a new process per
                                           # task in the cached venv): that step is not run
    reference_note: str = ""               # "exec, because ..." when the check switched it
    exec_unstable: str = ""                # a new interpreter per task differed from itself
    validate_deps: bool = True             # your mode checks a cached venv before reuse
    venv_note: str = ""                    # the same for fresh-venv
    skipped: Mapping[str, str] = field(default_factory=dict)   # step → why not run
    replay: advice.Replay = advice.placeholder


def _runs(runs: Sequence[StepRun]) -> dict[str, StepRun]:
    return {r.step.name: r for r in runs if r.ran}


def pair(runs: Mapping[str, StepRun], before: str, now: str) -> Comparison | None:
    a, b = runs.get(before), runs.get(now)
    if a is None or b is None:
        return None
    return compare_outcomes(b.view.outcomes, a.view.outcomes)


def _keys(keys: Sequence, shown: int = 12) -> str:
    return ", ".join(key_label(k) for k in keys[:shown]) + (" ..." if len(keys) > shown else "")


def differ_line(c: Comparison, before: str, now: str) -> str:
    w = c.words
    return (f"{len(c.differing)} of {len(c.common)} {w.counted} differ between {before} and "
            f"{now}: {w.labels} {_keys(c.differing)}")


def failed_line(c: Comparison, r: Mapping[str, StepRun], before: str, now: str) -> str:
    """How many differing runs failed in ``now`` while they ran in ``before``, with the
    first failure ("" when none did): a run that fails is not "other results"."""
    if not c.failed_now:
        return ""
    first = r[now].first_failure if now in r else ""
    return (f"{len(c.failed_now)} of them failed in {now} and ran in {before}"
            + (f" (first: {first})" if first else ""))


def _reuse_line(c: Comparison, now: str) -> str:
    later, w = c.after_other_tasks("now"), c.words
    agree, firsts = c.first_tasks_agree()
    line = (f"{len(later)} of the {len(c.differing)} differing {w.many} ran after other tasks "
            f"of their process in {now} (process_task_count > 1)")
    if firsts:
        line += f"; {agree} of the {firsts} {w.many} that were their process's first task agree"
    return line


def reference(runs: Mapping[str, StepRun]) -> str | None:
    """The step with the fewest layers left that ran (None: no step ran)."""
    for name in ("fresh-process", "one-process", "your-mode"):
        if name in runs:
            return name
    return next(iter(runs), None)


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


def unexplained_self_difference(runs: Sequence[StepRun], template: bool = False) -> str | None:
    """The first step that differs from its own repetition where carried state does not
    explain it (the search must then try one process, twice). ``template``: your mode forks
    from a template found to differ from a new interpreter, which explains your mode."""
    r = _runs(runs)
    for name in ("fresh-process", "your-mode"):
        c = pair(r, name, f"{name}-again")
        if c is None or not c.differs:
            continue
        if name == "your-mode" and (state_explains(r) or c.explained_by_reuse() or template):
            continue
        return name
    return None


def needs_fresh_process_again(runs: Sequence[StepRun]) -> bool:
    """Your mode differs from itself, and process reuse does not explain it."""
    r = _runs(runs)
    c = pair(r, "your-mode", "your-mode-again")
    return bool(c and c.differs and "fresh-process" in r and not state_explains(r)
                and not c.explained_by_reuse())


def fresh_process_unstable(runs: Sequence[StepRun]) -> bool:
    c = pair(_runs(runs), "fresh-process", "fresh-process-again")
    return bool(c and c.differs)


def requirement_differences(a: StepRun, b: StepRun, names: Sequence[str]) -> list[str]:
    """package_differences limited to the bundle's own requirements, versions that differ."""
    wanted = {n.lower().replace("_", "-") for n in names}
    return [line for line in package_differences(a.view, b.view, limit=50)
            if not line.startswith(("only in ", "... "))
            and line.split(" ", 1)[0].lower().replace("_", "-") in wanted]


def direct_names(facts: Facts) -> tuple[str, str]:
    """(the step that runs executor=direct in your processes, its one-process twin)."""
    return ("your-mode", "one-process") if facts.user_direct else ("direct", "direct-one-process")


def needs_direct_one_process(runs: Sequence[StepRun], facts: Facts) -> bool:
    """The direct step differs from the reference with the same versions of the bundle's
    requirements, and carried state does not explain it: one direct process decides."""
    r = _runs(runs)
    ref = reference(r)
    c = pair(r, ref, "direct") if ref else None
    if c is None or not c.differs or c.explained_by_reuse():
        return False
    return not requirement_differences(r[ref], r["direct"], facts.requirements)


def _self_differences(r: Mapping[str, StepRun]) -> list[str]:
    out = []
    for name in ("your-mode", "fresh-process"):
        c = pair(r, name, f"{name}-again")
        if c is not None and c.differs:
            out.append(f"{name} differs from itself: " + differ_line(c, name, f"{name}-again"))
    return out


def unstable(all_runs: Sequence[StepRun], facts: Facts) -> Finding | None:
    """A mode differs from itself: concurrency when one process is stable, else the model."""
    r = _runs(all_runs)
    name = unexplained_self_difference(
        all_runs, bool(facts.user_template and facts.reference_note))
    if name is None:
        return None
    evidence = _self_differences(r)
    one = pair(r, "one-process", "one-process-again")
    ref = reference(r)
    one_vs_ref = (pair(r, ref, "one-process")
                  if ref not in (None, "one-process") else None)
    # runs the reference could not run (it failed where one process ran, e.g. a write the
    # warm processes may not make) are no evidence against one process being stable
    ref_failed = bool(one_vs_ref and one_vs_ref.differs
                      and set(one_vs_ref.differing) <= set(one_vs_ref.failed_before))
    if one is not None and not one.differs and not (one_vs_ref and one_vs_ref.differs
                                                    and not ref_failed):
        evidence.append(f"one worker process, one task at a time, gives the same outputs "
                        f"twice ({len(one.common)} {one.words.counted})"
                        + (f" and agrees with {ref}" if one_vs_ref is not None
                           and not ref_failed else ""))
        if ref_failed:
            evidence.append(f"{ref} failed in {len(one_vs_ref.failed_before)} of them, so "
                            f"they could not be compared with it (first: "
                            f"{r[ref].first_failure})")
        return Finding(layer="concurrency", headline=advice.CONCURRENCY, evidence=evidence,
                       pair=(name, f"{name}-again"))
    if one is not None:
        evidence.append(("one worker process, one task at a time, differs from itself too: "
                         + differ_line(one, "one-process", "one-process-again"))
                        if one.differs else
                        differ_line(one_vs_ref, ref, "one-process"))
    elif "one-process" in facts.skipped:
        evidence.append(f"one-process was not run: {facts.skipped['one-process']}")
    else:
        evidence.append("one worker process was not tried twice: concurrency is not ruled out")
    if name == "fresh-process":
        evidence.append("no state can be carried between tasks there: every task ran as the "
                        "first of its process")
    else:
        evidence.append("process reuse does not explain it")
    return Finding(layer="nondeterministic", headline=advice.NONDETERMINISTIC,
                   evidence=evidence, pair=(name, f"{name}-again"))


def _exec_unstable(r: Mapping[str, StepRun], facts: Facts) -> Finding:
    """A new interpreter per task gave other outputs for the same seeds in its two runs
    (the reference check's sample and the reference): the reference is not deterministic,
    so no layer can be read against it."""
    evidence = [facts.exec_unstable]
    mine = pair(r, "your-mode", "your-mode-again")
    if mine is not None and not mine.differs:
        evidence.append(f"your mode agrees with itself ({len(mine.common)} "
                        f"{mine.words.counted}): something the model depends on is fixed "
                        "there and varies between new interpreters (Dask's worker processes "
                        "fix PYTHONHASHSEED, for instance, so a set of strings is iterated in "
                        "the same order there, and in another order in each new interpreter)")
    return Finding(layer="nondeterministic", headline=advice.NONDETERMINISTIC,
                   evidence=evidence, pair=("fresh-process-exec", "fresh-process"))


def _state(r: Mapping[str, StepRun], all_runs: Sequence[StepRun], facts: Facts,
           ref: str) -> Finding | None:
    if not state_explains(r):
        return None
    c = pair(r, "fresh-process", "your-mode")
    if not c.differs:
        c = pair(r, "fresh-process", "your-mode-again")
    evidence = [differ_line(c, "fresh-process", "your-mode"), _reuse_line(c, "your-mode")]
    again = pair(r, "your-mode", "your-mode-again")
    if again is not None and again.differs:
        evidence.append(f"your mode also differs from itself ({len(again.differing)} "
                        f"{again.words.counted}): which {again.words.many} a process ran "
                        "before depends on scheduling")
    if facts.user_direct:
        evidence.append("your mode (executor=direct) re-imports the bundle's modules per task, "
                        "so the state lives outside them")
        return Finding(layer="process_state", headline=advice.PROCESS_STATE,
                       evidence=evidence, pair=("fresh-process", "your-mode"))
    direct = pair(r, ref, "direct")
    if direct is None:
        why = facts.skipped.get("direct") or next(
            (s.skipped for s in all_runs if s.step.name == "direct" and s.skipped), "")
        if why:
            evidence.append(f"the direct step, which tells module state from process state, "
                            f"could not run: {why}")
        return Finding(layer="warm_state", headline=advice.WARM_STATE, evidence=evidence,
                       pair=("fresh-process", "your-mode"))
    if not direct.differs:
        evidence.append(f"direct (bundle modules re-imported per task, the process kept) "
                        f"agrees with {ref}")
        return Finding(layer="module_state", headline=advice.MODULE_STATE, evidence=evidence,
                       pair=("fresh-process", "your-mode"))
    evidence.append(f"direct differs from {ref} too, although it re-imports the bundle per "
                    "task: " + _reuse_line(direct, "direct"))
    return Finding(layer="process_state", headline=advice.PROCESS_STATE, evidence=evidence,
                   pair=("fresh-process", "your-mode"))


def _direct(r: Mapping[str, StepRun], facts: Facts, ref: str) -> Finding | None:
    """The worker environment against the bundle's venv: versions, or direct's processes."""
    name, one_name = direct_names(facts)
    if name == ref:
        return None
    c = pair(r, ref, name)
    if c is None or not c.differs:
        return None
    versions = requirement_differences(r[ref], r[name], facts.requirements)
    if versions:
        return Finding(layer="worker_env", headline=advice.worker_env(versions),
                       evidence=[differ_line(c, ref, name), "packages: " + "; ".join(versions)],
                       pair=(ref, name))
    same = ("the bundle's requirements have the same versions in both"
            if facts.requirements else "the bundle declares no requirements")
    one = pair(r, ref, one_name)
    if one is not None and not one.differs:
        return Finding(layer="concurrency", headline=advice.DIRECT_CONCURRENCY,
                       evidence=[differ_line(c, ref, name), same,
                                 f"{one_name} (executor=direct, one worker process, one task "
                                 f"at a time) agrees with {ref}"],
                       pair=(ref, name))
    evidence = [differ_line(c, ref, name), same]
    failed = failed_line(c, r, ref, name)
    if failed and len(c.failed_now) == len(c.differing):
        # every difference is a failure in the worker's process: say so, not "other results"
        headline = advice.direct_fails(r[name].first_failure, facts.user_direct)
        return Finding(layer="direct_process", headline=headline,
                       evidence=[*evidence, failed], pair=(ref, name))
    if failed:
        evidence.append(failed)
    if one is not None:
        evidence.append(f"{one_name} differs from {ref} too: " + differ_line(one, ref, one_name))
    return Finding(layer="direct_process", headline=advice.DIRECT_PROCESS,
                   evidence=evidence, pair=(ref, name))


def judge(all_runs: Sequence[StepRun], facts: Facts | None = None) -> Verdict:
    facts = facts or Facts()
    r = _runs(all_runs)
    ref = reference(r)
    if ref is None:
        reasons = "; ".join(f"{k}: {v}" for k, v in facts.skipped.items()) or "none ran"
        return Verdict(findings=[], summary=f"no step could run ({reasons})",
                       exit_code=EXIT_FAILED)
    first = unstable(all_runs, facts)
    if first is not None:
        return _verdict([first], all_runs, facts, ref)
    if facts.exec_unstable:
        return _verdict([_exec_unstable(r, facts)], all_runs, facts, ref)
    findings: list[Finding] = []
    template = bool(facts.reference_note and facts.user_template)
    if template:
        c = pair(r, "fresh-process", "your-mode")
        findings.append(Finding(
            layer="template_fork", headline=advice.TEMPLATE_FORK,
            evidence=[facts.reference_note,
                      *([differ_line(c, "fresh-process", "your-mode")] if c else [])],
            pair=("fresh-process", "your-mode")))
    state = _state(r, all_runs, facts, ref)
    mine = pair(r, "fresh-process", "your-mode")
    if state is not None:
        findings.append(state)
    elif not template and not facts.user_direct and mine is not None and mine.differs:
        findings.append(Finding(layer="warm_process", headline=advice.WARM_PROCESS,
                                evidence=[differ_line(mine, "fresh-process", "your-mode"),
                                          _reuse_line(mine, "your-mode")],
                                pair=("fresh-process", "your-mode")))
    # your mode may be fresh-process itself (then that step is not run)
    fresh = "fresh-process" if "fresh-process" in r or not facts.user_fresh else "your-mode"
    # native-threads=N and one-process run in the cached venv, as the reference before a
    # venv fault does: a cached venv at fault must not read as their layers too
    cached = ref
    venv = pair(r, fresh, "fresh-venv")
    if venv is not None and venv.differs:
        packages = package_differences(r[fresh].view, r["fresh-venv"].view)
        findings.append(Finding(
            layer="cached_venv", headline=advice.CACHED_VENV,
            evidence=[differ_line(venv, fresh, "fresh-venv"),
                      *(["packages: " + "; ".join(packages)] if packages else
                        ["the package versions are the same: a file inside the cached venv "
                         "differs (modified or deleted after the build)"]),
                      advice.validate_deps(facts.validate_deps, bool(packages))],
            pair=(fresh, "fresh-venv")))
        ref = "fresh-venv"
    if state is None:
        direct = _direct(r, facts, ref)
        if direct is not None:
            findings.append(direct)
    for name in r:
        if name.startswith("native-threads=") and not name.endswith("-again"):
            base = "your-mode" if r[name].step.direct else cached
            c = pair(r, base, name)
            if c is not None and c.differs:
                findings.append(Finding(
                    layer="native_threads", headline=advice.native_threads(name.split("=")[1]),
                    evidence=[differ_line(c, base, name),
                              "set worker.executor.nativeThreads to the value you validated "
                              "with (1 is the default)"],
                    pair=(base, name)))
    c = pair(r, cached, "one-process")
    if c is not None and c.differs and not facts.user_direct:
        findings.append(Finding(layer="concurrency", headline=advice.CONCURRENCY,
                                evidence=[differ_line(c, cached, "one-process")],
                                pair=(cached, "one-process")))
    return _verdict(findings, all_runs, facts, ref)


# layers named from one step against a later, different step (not a step against its own
# repetition, not the template check): a later step reads what an earlier one left behind
# just as it would differ by its own setting
ORDERED_LAYERS = ("module_state", "process_state", "warm_state", "warm_process", "cached_venv",
                  "worker_env", "direct_process", "native_threads", "concurrency")
AFTER = "-after"


def needs_after(all_runs: Sequence[StepRun], verdict: Verdict) -> str | None:
    """The step to run once more after the others (None: none): the earlier step of the
    first finding's pair, when the later step of the pair ran after it and the pair is not
    a step and its repetition; a difference left behind by the steps between them must not
    be read as the later step's layer."""
    if not verdict.findings:
        return None
    f = verdict.findings[0]
    first, later = f.pair
    order = [s.step.name for s in all_runs if s.ran]
    if (f.layer not in ORDERED_LAYERS or first not in order or later not in order
            or later == f"{first}-again" or f"{first}{AFTER}" in order):
        return None
    return first if order.index(later) > order.index(first) else None


def _left_behind(r: Mapping[str, StepRun], findings: list[Finding]) -> list[Finding]:
    """When a step ran once more after the others and no longer agrees with its first run,
    something the steps left behind changed it: that comes first, and a finding stays only
    if its later step differs from the step's run after the others too."""
    ran = [name for name in r if name.endswith(AFTER)]
    if not ran:
        return findings
    after = ran[0]
    first = after[: -len(AFTER)]
    c = pair(r, first, after)
    if c is None or not c.differs:
        return findings
    later = [f.pair[1] for f in findings if f.pair[0] == first]
    evidence = [f"{first} ran once more after the other steps, with the same settings: "
                + differ_line(c, first, after),
                *(f"so the difference between {first} and {name} is not {name}'s own: the "
                  f"runs between them left something that later runs read" for name in later[:1])]
    kept = []
    for f in findings:
        if f.pair[0] == first:
            now = pair(r, after, f.pair[1])
            if now is None or not now.differs:
                continue
        kept.append(f)
    return [Finding(layer="outside_state", headline=advice.OUTSIDE_STATE, evidence=evidence,
                    pair=(first, after)), *kept]


def _verdict(findings: list[Finding], all_runs: Sequence[StepRun], facts: Facts,
             ref: str) -> Verdict:
    findings = _left_behind(_runs(all_runs), findings)
    reference_line = (f"{ref}" + (f" from a new interpreter per task (exec), because "
                                  f"{facts.reference_note}" if facts.reference_note else "")
                      + (f"; fresh-venv from a venv built per task and a new interpreter "
                         f"(exec), because {facts.venv_note}" if facts.venv_note else ""))
    if findings:
        why, command = advice.next_step(findings[0].layer, all_runs, facts.replay,
                                        findings[0].pair, facts.user_direct)
        return Verdict(findings=findings, summary=f"layer found: {findings[0].headline}",
                       reference=reference_line, next_command=command, next_why=why,
                       exit_code=EXIT_DIFFERS)
    ran = [s.step.name for s in all_runs if s.ran]
    why, command = advice.next_step("", all_runs, facts.replay, ("", ""))
    return Verdict(
        findings=[],
        summary=(f"no difference: your model gave the same outputs for each seed in every "
                 f"step ({', '.join(ran)}); the bug was not reproduced in any mode"),
        reference=reference_line, next_command=command, next_why=why,
        next_steps=[
            f"note: {advice.NOT_THREADS}",
            "a difference that needs production load, other nodes or external services is "
            "outside what these modes vary: compare your cluster's --results with a "
            "local one (`modelops-runtime compare`)"],
        exit_code=EXIT_OK)
