"""Two runs of a study, compared (set, seed) by (set, seed): ``local --compare``, the
``compare`` command and every pair diagnose looks at.

Runs are comparable only if their inputs agree (bundle digest, entrypoint, aggregation,
every set's params): otherwise a difference would be blamed on the mode when an input
changed, so :func:`inputs_difference` names what differs and the caller refuses. (Set,
seed) runs only one of them covers are a note, not a difference. A difference is anything
but the same outputs (NaN equals NaN) or the same error type; differing runs are broken
down by ``process_task_count`` (a run that differs only where its process had run other
tasks before is the signature of state carried between tasks) and the package versions the
two runs ran with are set side by side. The lines say "seeds" for a study of one parameter
set and "(set, seed) runs", labelled ``set:seed``, for a study of several (:class:`Words`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ...errors import LocalModeError
from ..results import (RESULTS_FORMAT, SINGLE_SET, FailureRecord, Key, RunInputs, RunView,
                      SeedOutcome, SimRecord, StudyRun, load_run, outcomes_of, plain_json,
                      results_document, view_of)
from .setdiff import sets_difference


__all__ = ["RESULTS_FORMAT", "SINGLE_SET", "Comparison", 
           "FailureRecord", "InputsDiffer", "RunInputs", "RunView", "SeedOutcome",
           "SimRecord", "StudyRun", "Words", "compare_outcomes", "compare_runs", "inputs_difference",
           "load_baseline", "load_run", "outcomes_of", "package_differences", "plain_json",
           "results_document", "same_outputs", "view_of"]


class InputsDiffer(LocalModeError):
    """The two runs computed different things: comparing them would blame the mode."""


def load_baseline(path: Path) -> RunView:
    """An earlier ``--results`` file, read for ``local --compare``."""
    return load_run(path, "--compare")


def same_outputs(a: Any, b: Any) -> bool:
    """``a == b`` on JSON data, except that NaN equals NaN: a seeded run that gives NaN
    gives it again, and that is the same result."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_outputs, a, b))
    return a == b


def same_outcome(a: SeedOutcome, b: SeedOutcome) -> bool:
    if a.error_type is None and b.error_type is None:
        return same_outputs(a.outputs, b.outputs)
    return a.error_type == b.error_type


# -- inputs ------------------------------------------------------------------------------

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def inputs_difference(a: RunInputs | None, b: RunInputs | None, a_label: str,
                      b_label: str) -> str | None:
    """One line naming what differs between the inputs of two runs, or None if they may
    be compared. Runs that did not record their inputs (older results files) are compared
    (the caller notes it)."""
    if a is None or b is None:
        return None
    if a.bundle != b.bundle:
        return (f"the bundle differs: {a.bundle[:19]}… in {a_label}, {b.bundle[:19]}… in "
                f"{b_label} (the model's code or dependencies changed)")
    if a.entrypoint != b.entrypoint:
        return f"the entrypoint differs: {a.entrypoint} in {a_label}, {b.entrypoint} in {b_label}"
    if a.aggregate != b.aggregate:
        return f"the aggregation differs: {a.aggregate} in {a_label}, {b.aggregate} in {b_label}"
    for set_id in sorted(set(a.sets) & set(b.sets)):
        pa, pb = a.sets[set_id], b.sets[set_id]
        for name in sorted(set(pa) | set(pb)):
            if name not in pb or name not in pa or pa[name] != pb[name] \
                    or type(pa[name]) is not type(pb[name]):
                where = "" if set_id == SINGLE_SET else f" of set {set_id}"
                va = _short(pa[name]) if name in pa else "(not set)"
                vb = _short(pb[name]) if name in pb else "(not set)"
                return f"param {name!r}{where} differs: {va} in {a_label}, {vb} in {b_label}"
    changed = sets_difference(a, b, a_label, b_label)   # a set's param changed: name it
    if changed:
        return changed
    if not set(a.sets) & set(b.sets):
        return (f"the runs share no parameter set: {', '.join(sorted(a.sets))} in {a_label}, "
                f"{', '.join(sorted(b.sets))} in {b_label}")
    keys_a = {(s, seed) for s, seeds in a.seeds.items() for seed in seeds}
    keys_b = {(s, seed) for s, seeds in b.seeds.items() for seed in seeds}
    if keys_a and keys_b and not keys_a & keys_b:
        return (f"the runs share no seed: {_span(keys_a)} in {a_label}, {_span(keys_b)} in "
                f"{b_label}")
    return None


# -- packages ----------------------------------------------------------------------------

def _versions(view: RunView, keys: Iterable[Key] | None = None) -> dict[str, set[str]]:
    """name → versions over the package sets ``view``'s sims (or ``keys``) ran with."""
    keys = view.outcomes.keys() if keys is None else keys
    digests = {view.outcomes[k].env_digest for k in keys if k in view.outcomes}
    out: dict[str, set[str]] = {}
    for d in digests:
        for line in view.environments.get(d, []):
            name, _, version = line.partition("==")
            out.setdefault(name, set()).add(version)
    return out


def where_it_ran(view: RunView) -> str:
    executors = {o.executor for o in view.outcomes.values() if o.executor}
    if executors == {"direct"}:
        return "worker environment"
    if executors == {"isolated_warm"}:
        return "bundle venv"
    return "mixed environments" if executors else "environment not recorded"


def package_differences(a: RunView, b: RunView, limit: int = 8) -> list[str]:
    """``numpy 1.26.4 (A, worker environment) vs 2.4.6 (B, bundle venv)`` for every package
    both runs had in other versions, then (one entry) the packages only one of them had:
    a worker environment holds the runtime's own packages too, which a venv never has."""
    va, vb = _versions(a), _versions(b)
    if not va or not vb:
        return []
    out = []
    for name in sorted(set(va) & set(vb)):
        if va[name] != vb[name]:
            out.append(f"{name} {'/'.join(sorted(va[name]))} ({a.label}, {where_it_ran(a)}) "
                       f"vs {'/'.join(sorted(vb[name]))} ({b.label}, {where_it_ran(b)})")
    shown = out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])
    for label, only in ((a.label, sorted(set(va) - set(vb))), (b.label, sorted(set(vb) - set(va)))):
        if only:
            names = ", ".join(only[:5]) + (f" and {len(only) - 5} more" if len(only) > 5 else "")
            shown.append(f"only in {label}: {names}")
    return shown


# -- outcomes ----------------------------------------------------------------------------

def key_label(key: Key) -> str:
    set_id, seed = key
    return str(seed) if set_id == SINGLE_SET else f"{set_id}:{seed}"


def _seeds(keys: Sequence[Key], label: Callable[[Key], str] = key_label, shown: int = 10) -> str:
    return ", ".join(map(label, keys[:shown])) + (" ..." if len(keys) > shown else "")


class Words(BaseModel):
    """What a comparison counts, in words: seeds in a study of one parameter set, (set,
    seed) runs in a study of several (their labels are ``set:seed``)."""

    one: str        # "seed" | "run"
    many: str       # "seeds" | "runs"
    counted: str    # "seeds" | "(set, seed) runs": the first count of a line
    labels: str     # "seeds" | "set:seed": before a list of key labels
    column: str     # "seed" | "set:seed": the heading of a column of key labels

    @classmethod
    def of(cls, keys: Iterable[Key]) -> Words:
        if all(set_id == SINGLE_SET for set_id, _ in keys):
            return cls(one="seed", many="seeds", counted="seeds", labels="seeds", column="seed")
        return cls(one="run", many="runs", counted="(set, seed) runs", labels="set:seed",
                   column="set:seed")


def _span(keys: Iterable[Key]) -> str:
    seeds = sorted(k[1] for k in keys)
    return f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"


class Comparison(BaseModel):
    """Two runs, (set, seed) by (set, seed). ``now`` is the run compared, ``before`` the
    reference."""

    now: dict[Key, SeedOutcome]
    before: dict[Key, SeedOutcome]
    common: list[Key]               # in both runs
    outputs_differ: list[Key]       # ok in both, different outputs
    failed_now: list[Key]           # ok in the reference, failed in this run
    failed_before: list[Key]        # failed in the reference, ok in this run
    error_differs: list[Key]        # failed in both, with different error types
    failed_both: list[Key]          # failed in both with the same error type
    only_now: list[Key]             # not in the reference
    only_before: list[Key]          # in the reference, not in this run

    @property
    def words(self) -> Words:
        return Words.of([*self.now, *self.before])

    @property
    def differing(self) -> list[Key]:
        return sorted(self.outputs_differ + self.failed_now + self.failed_before
                      + self.error_differs)

    @property
    def differs(self) -> bool:
        """A (set, seed) both runs cover has another outcome (coverage alone is a note)."""
        return bool(self.differing)

    @property
    def coverage_differs(self) -> bool:
        return bool(self.only_now or self.only_before)

    def after_other_tasks(self, side: str) -> list[Key]:
        """Differing (set, seed) runs that ran as the 2nd or later task of their process in ``side``
        ('now' or 'before')."""
        runs = self.now if side == "now" else self.before
        return [k for k in self.differing if (runs[k].process_task_count or 0) > 1]

    def first_tasks_agree(self) -> tuple[int, int]:
        """(agreeing, total) over the (set, seed) runs that were their process's first task
        in both runs."""
        firsts = [k for k in self.common if self.now[k].process_task_count == 1
                  and self.before[k].process_task_count == 1]
        return sum(1 for k in firsts if k not in set(self.differing)), len(firsts)

    def explained_by_reuse(self) -> bool:
        """Every differing (set, seed) ran after other tasks of its process in at least one run."""
        d = self.differing
        later = set(self.after_other_tasks("now")) | set(self.after_other_tasks("before"))
        return bool(d) and all(k in later for k in d)

    def report(self, ref: str, *, now_label: str = "this run",
               same_mode: bool | None = None) -> list[str]:
        """The lines the user reads, differences first. ``same_mode``: whether both runs
        were in the same mode (None: unknown)."""
        n, lines, w = len(self.common), [], self.words
        if not self.common:
            lines.append(f"warning: no seed of {now_label} ({_span(self.now)}) is in {ref} "
                         f"({_span(self.before)}): nothing could be compared; run the "
                         "same study with the same first_seed and --sims")
            return lines
        for keys, what, label in (
                (self.outputs_differ, f"give different outputs than {ref}", key_label),
                (self.failed_now, f"ok in {ref} failed in {now_label}", self._error_now),
                (self.failed_before, f"failed in {ref} but are ok in {now_label}",
                 self._error_before),
                (self.error_differs, f"failed with a different error than in {ref}",
                 self._errors)):
            if keys:
                lines.append(f"{len(keys)} of {n} {w.counted} {what} ({w.labels} "
                             f"{_seeds(keys, label)})")
        for keys, of, other in ((self.only_before, ref, now_label),
                                (self.only_now, now_label, ref)):
            if keys:
                lines.append(f"note: {len(keys)} {w.one}(s) of {of} are not in {other} "
                             f"({w.labels} {_seeds(keys)}); compared the {n} both cover")
        types = ", ".join(sorted({self.now[s].error_type or "" for s in self.failed_both}))
        if self.differs:
            lines.extend(self._reuse_lines(ref, now_label))
            if same_mode is True:
                lines.append("both runs were in the same mode and still differ: the model "
                             "(or something outside the runtime) is not deterministic, or "
                             "state carried between tasks depends on which tasks a process "
                             "ran; `modelops-runtime diagnose` tells which")
            else:
                lines.append("this mode changes the results")
        elif len(self.failed_both) == n:
            lines.append(f"every one of the {n} {w.counted} failed in {ref} and in {now_label}, "
                         f"with the same error type ({types}): no outputs were compared; fix "
                         f"the failures first (see the failed {w.many} above)")
        elif self.failed_both:
            lines.append(f"all {n} {w.counted} give the same outcome as {ref}: "
                         f"{n - len(self.failed_both)} the same outputs, "
                         f"{len(self.failed_both)} the same failure ({types})")
        else:
            lines.append(f"all {n} {w.counted} give the same outputs as {ref}")
        return lines

    def _reuse_lines(self, ref: str, now_label: str) -> list[str]:
        d = self.differing
        if not any(self.now[k].process_task_count is not None for k in d):
            return []
        a, b = self.after_other_tasks("now"), self.after_other_tasks("before")
        w = self.words
        line = (f"by process_task_count: of the {len(d)} differing {w.many}, {len(a)} ran after "
                f"other tasks of their process in {now_label}, {len(b)} in {ref}")
        agree, firsts = self.first_tasks_agree()
        if self.explained_by_reuse():
            line += (f"; every differing {w.one} ran after other tasks of its process, "
                     f"and {agree} of {firsts} {w.many} that were their process's first task "
                     f"in {now_label} and in {ref} agree: state carried between tasks of a "
                     "process")
        return [line]

    def _error_now(self, key: Key) -> str:
        return f"{key_label(key)} {self.now[key].error_type}"

    def _error_before(self, key: Key) -> str:
        return f"{key_label(key)} {self.before[key].error_type}"

    def _errors(self, key: Key) -> str:
        return (f"{key_label(key)} {self.now[key].error_type}, was "
                f"{self.before[key].error_type}")


def compare_outcomes(now: Mapping[Key, SeedOutcome],
                     before: Mapping[Key, SeedOutcome]) -> Comparison:
    """(set, seed) by (set, seed): the same outputs (NaN-aware) or the same error type,
    else a difference."""
    common = sorted(set(now) & set(before))
    kinds: dict[str, list[Key]] = {k: [] for k in (
        "outputs_differ", "failed_now", "failed_before", "error_differs", "failed_both")}
    for s in common:
        a, b = now[s], before[s]
        if a.error_type is None and b.error_type is None:
            if not same_outputs(a.outputs, b.outputs):
                kinds["outputs_differ"].append(s)
        elif b.error_type is None:
            kinds["failed_now"].append(s)
        elif a.error_type is None:
            kinds["failed_before"].append(s)
        else:
            kinds["error_differs" if a.error_type != b.error_type else "failed_both"].append(s)
    return Comparison(now=dict(now), before=dict(before), common=common,
                      only_now=sorted(set(now) - set(before)),
                      only_before=sorted(set(before) - set(now)), **kinds)


def compare_runs(now: RunView, before: RunView) -> Comparison:
    """Refuse runs whose inputs differ (:class:`InputsDiffer`), else compare them."""
    problem = inputs_difference(before.inputs, now.inputs, before.label, now.label)
    if problem:
        raise InputsDiffer(f"not comparable: {problem}; compare runs of the same study")
    return compare_outcomes(now.outcomes, before.outcomes)


def same_mode(a: RunView, b: RunView) -> bool | None:
    if not a.mode or not b.mode:
        return None
    return a.mode == b.mode and a.workers == b.workers
