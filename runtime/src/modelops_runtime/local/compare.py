"""What a study run produced (the records ``--results`` writes), the results file as
``--compare`` reads it, and the seed-by-seed comparison of two runs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import LocalModeError
from ..models import SimResult

RESULTS_FORMAT = 2    # 2: NaN/±inf kept as JSON NaN/Infinity; 1 (no field): stored as null


class SimRecord(BaseModel):
    """One simulation's seed and result, as written to ``--results``."""

    seed: int
    result: SimResult


class FailureRecord(BaseModel):
    seed: int
    error_type: str
    message: str


class StudyRun(BaseModel):
    """What one study run produced (and how it was executed)."""

    study: str
    bundle: str
    sims: list[SimRecord]
    failures: list[FailureRecord]
    aggregate: SimResult | None
    aggregate_error: str | None = None
    nthreads: dict[str, int]        # client.nthreads(): Dask worker address → threads
    worker_pids: dict[str, int]     # Dask worker address → pid of that worker process
    pool_stats: dict[str, Any]
    elapsed_s: float
    # package sets the sims ran with: SimResult.env_digest → sorted name==version list
    environments: dict[str, list[str]] = Field(default_factory=dict)

# ---------------------------------------------------------------------------------
# --results as --compare reads it, and the seed-by-seed comparison
# ---------------------------------------------------------------------------------

def _json_fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):      # numpy scalars and arrays: their plain-Python value
        return value.tolist()
    return str(value)


def plain_json(value: Any) -> Any:
    """``value`` as the results file stores it: JSON data, with NaN and ±inf kept as floats
    (Python's json writes them as the tokens NaN/Infinity and reads them back). Both sides
    of --compare go through this one function, so a stored output equals a fresh one."""
    return json.loads(json.dumps(value, default=_json_fallback))


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


class SeedOutcome(BaseModel):
    """One seed as --compare sees it: its outputs, or the error type it failed with."""

    model_config = ConfigDict(frozen=True)

    outputs: Any = None
    error_type: str | None = None     # None: the sim succeeded


class Baseline(BaseModel):
    """An earlier ``--results`` file, read for --compare."""

    path: Path
    format: int
    outcomes: dict[int, SeedOutcome]


class _StoredResult(BaseModel):
    outputs: Any


class _StoredSim(BaseModel):
    seed: int
    result: _StoredResult


class _ResultsFile(BaseModel):
    """The part of a results file --compare reads (format 1 files have no ``format``)."""

    format: int = 1
    sims: list[_StoredSim]
    failures: list[FailureRecord] = Field(default_factory=list)


def load_baseline(path: Path) -> Baseline:
    """Every seed's outcome (outputs or error type) from an earlier ``--results`` file."""
    path = Path(path)
    try:
        stored = _ResultsFile.model_validate(json.loads(path.read_text()))
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                            for e in exc.errors()[:3])
        raise LocalModeError(f"--compare {path}: not a results file ({problem}); pass a "
                             "file written by an earlier run with --results") from None
    except (OSError, ValueError) as exc:
        raise LocalModeError(
            f"--compare {path}: not a results file ({type(exc).__name__}: {exc}); pass a "
            "file written by an earlier run with --results") from None
    if not 1 <= stored.format <= RESULTS_FORMAT:
        raise LocalModeError(
            f"--compare {path}: results file format {stored.format} is not one this "
            f"modelops-runtime reads (1..{RESULTS_FORMAT}); it was written by a newer "
            "version: upgrade modelops-runtime, or write a new baseline with --results")
    outcomes = {s.seed: SeedOutcome(outputs=s.result.outputs) for s in stored.sims}
    outcomes.update({f.seed: SeedOutcome(error_type=f.error_type) for f in stored.failures})
    return Baseline(path=path, format=stored.format, outcomes=outcomes)


def outcomes_of(run: StudyRun) -> dict[int, SeedOutcome]:
    """This run's seeds as a baseline would hold them (outputs stored as JSON)."""
    out = {r.seed: SeedOutcome(outputs=plain_json(r.result.outputs)) for r in run.sims}
    out.update({f.seed: SeedOutcome(error_type=f.error_type) for f in run.failures})
    return out


def _seeds(seeds: Sequence[int], label: Callable[[int], str] = str, shown: int = 10) -> str:
    return ", ".join(map(label, seeds[:shown])) + (" ..." if len(seeds) > shown else "")


def _span(seeds: Iterable[int]) -> str:
    seeds = sorted(seeds)
    return f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"


class Comparison(BaseModel):
    """--compare's verdict seed by seed. A difference is anything but the same outputs or
    the same error type: a failure that comes and goes with the mode points to the layer
    that mode removed, just like a changed output."""

    now: dict[int, SeedOutcome]
    before: dict[int, SeedOutcome]
    common: list[int]               # seeds in both runs
    outputs_differ: list[int]       # ok in both, different outputs
    failed_now: list[int]           # ok in the baseline, failed in this run
    failed_before: list[int]        # failed in the baseline, ok in this run
    error_differs: list[int]        # failed in both, with different error types
    failed_both: list[int]          # failed in both with the same error type
    only_now: list[int]             # not in the baseline
    only_before: list[int]          # in the baseline, not run this time

    @property
    def differs(self) -> bool:
        return bool(self.outputs_differ or self.failed_now or self.failed_before
                    or self.error_differs or self.only_now or self.only_before)

    def report(self, baseline: Baseline) -> list[str]:
        """The lines the user reads (each prefixed ``compare:``), differences first."""
        ref, n, lines = baseline.path, len(self.common), []
        if not self.common:
            lines.append(f"warning: no seed of this run ({_span(self.now)}) is in {ref} "
                         f"({_span(self.before)}): nothing could be compared; run the "
                         "baseline's study with the same first_seed and --sims")
        if self.outputs_differ:
            lines.append(f"{len(self.outputs_differ)} of {n} seeds give different outputs "
                         f"than {ref} (seeds {_seeds(self.outputs_differ)})")
        if self.failed_now:
            lines.append(f"{len(self.failed_now)} of {n} seeds ok in {ref} failed in this "
                         f"run (seeds {_seeds(self.failed_now, self._error_now)})")
        if self.failed_before:
            lines.append(f"{len(self.failed_before)} of {n} seeds failed in {ref} but are "
                         f"ok in this run (seeds {_seeds(self.failed_before, self._error_before)})")
        if self.error_differs:
            lines.append(f"{len(self.error_differs)} of {n} seeds failed with a different "
                         f"error than in {ref} (seeds {_seeds(self.error_differs, self._errors)})")
        if self.only_before and self.common:
            lines.append(f"{len(self.only_before)} seed(s) of {ref} were not run this time "
                         f"(seeds {_seeds(self.only_before)})")
        if self.only_now and self.common:
            lines.append(f"{len(self.only_now)} seed(s) of this run are not in {ref} "
                         f"(seeds {_seeds(self.only_now)})")
        types = ", ".join(sorted({self.now[s].error_type or "" for s in self.failed_both}))
        if self.differs:
            same_seeds = self.outputs_differ or self.failed_now or self.failed_before \
                or self.error_differs
            lines.append(
                "this mode changes the results" if same_seeds else
                "the runs cover different seeds: compare runs of the same seeds")
            if baseline.format < 2 and self.outputs_differ:
                lines.append(f"note: {ref} was written by an older modelops-runtime that "
                             "stored NaN and infinite outputs as null; if your outputs can be "
                             "NaN, write a new baseline with --results")
        elif n and len(self.failed_both) == n:
            lines.append(f"every one of the {n} seeds failed in both runs, with the same "
                         f"error type ({types}): no outputs were compared; fix the failures "
                         "first (see the failed seeds above)")
        elif self.failed_both:
            lines.append(f"all {n} seeds give the same outcome as {ref}: "
                         f"{n - len(self.failed_both)} the same outputs, "
                         f"{len(self.failed_both)} the same failure ({types})")
        else:
            lines.append(f"all {n} seeds give the same outputs as {ref}")
        return lines

    def _error_now(self, seed: int) -> str:
        return f"{seed} {self.now[seed].error_type}"

    def _error_before(self, seed: int) -> str:
        return f"{seed} {self.before[seed].error_type}"

    def _errors(self, seed: int) -> str:
        return f"{seed} {self.now[seed].error_type}, was {self.before[seed].error_type}"


def compare_outcomes(now: Mapping[int, SeedOutcome],
                     before: Mapping[int, SeedOutcome]) -> Comparison:
    """Seed by seed: the same outputs (NaN-aware) or the same error type, else a difference."""
    common = sorted(set(now) & set(before))
    kinds: dict[str, list[int]] = {k: [] for k in (
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
