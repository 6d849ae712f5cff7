"""What a study run produced and the ``--results`` file that keeps it: every seed's
outputs (or error type) with how it was executed, the run's inputs (bundle digest,
entrypoint, parameter sets, seeds), its mode, and the package sets its sims ran with.

Outcomes are keyed by ``(set id, seed)``: a study of one parameter set has the one set
id :data:`SINGLE_SET`; studies of many sets give each its own id, and compare/diagnose
match runs on that pair.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..client.plan import ParamSet
from ..errors import LocalModeError
from ..models import Scalar, SimResult

RESULTS_FORMAT = 3    # 3: inputs, set ids, package sets; 2: NaN/±inf kept; 1: NaN as null
SINGLE_SET = "params"  # the set id of a study with one parameter set (`params:`)

Key = tuple[str, int]   # (set id, seed)


class SimRecord(BaseModel):
    """One simulation's seed and result, as written to ``--results``."""

    seed: int
    set: str = SINGLE_SET
    result: SimResult


class FailureRecord(BaseModel):
    seed: int
    set: str = SINGLE_SET
    error_type: str
    message: str


class RunInputs(BaseModel):
    """What a run computed: two runs are comparable only if these agree (seeds may
    differ: the seeds both cover are compared)."""

    model_config = ConfigDict(frozen=True)

    bundle: str                                   # sha256:<hex> of the packed bundle
    entrypoint: str
    aggregate: str | None = None
    sets: dict[str, dict[str, Scalar]]            # set id → params, in the study's order
    seeds: dict[str, list[int]]                   # set id → seeds run
    labels: dict[str, str] = Field(default_factory=dict)   # set id → label (labelled sets)


class SetAggregate(BaseModel):
    """One parameter set's aggregate (over its successful runs), or why there is none."""

    set_id: str
    runs: int                       # successful runs the aggregate was given
    failed: int
    aggregate: SimResult | None = None
    aggregate_error: str | None = None


class StudyRun(BaseModel):
    """What one study run produced (and how it was executed)."""

    study: str
    bundle: str
    sims: list[SimRecord]
    failures: list[FailureRecord]
    aggregate: SimResult | None     # one set: its aggregate; several: the one across sets
    aggregate_error: str | None = None
    param_sets: list[ParamSet] = Field(default_factory=list)          # every set, in order
    set_aggregates: list[SetAggregate] = Field(default_factory=list)  # several sets only
    nthreads: dict[str, int]        # client.nthreads(): Dask worker address → threads
    worker_pids: dict[str, int]     # Dask worker address → pid of that worker process
    pool_stats: dict[str, Any]
    elapsed_s: float
    dask_tasks: int = 0             # Dask tasks the runs were grouped into (batching)
    batch_plan: str = ""            # the batch plan's one line (client/batching.py)
    inputs: RunInputs | None = None
    # package sets the sims ran with: SimResult.env_digest → sorted name==version list
    environments: dict[str, list[str]] = Field(default_factory=dict)


def _json_fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):      # numpy scalars and arrays: their plain-Python value
        return value.tolist()
    return str(value)


def plain_json(value: Any) -> Any:
    """``value`` as the results file stores it: JSON data, with NaN and ±inf kept as floats
    (Python's json writes them as the tokens NaN/Infinity and reads them back). Both sides
    of a comparison go through this one function, so a stored output equals a fresh one."""
    return json.loads(json.dumps(value, default=_json_fallback))


class SeedOutcome(BaseModel):
    """One (set, seed) as a comparison sees it: its outputs, or the error type it failed
    with, and how it was executed."""

    model_config = ConfigDict(frozen=True)

    outputs: Any = None
    error_type: str | None = None          # None: the sim succeeded
    process_task_count: int | None = None  # tasks its process had run, this one included
    pid: int | None = None
    executor: str | None = None
    env_digest: str = ""


class RunView(BaseModel):
    """A run as compare and diagnose read it: from a results file or a fresh StudyRun."""

    label: str                               # the file, or the diagnose step
    format: int = RESULTS_FORMAT
    inputs: RunInputs | None = None
    mode: str = ""                           # RuntimeConfig.summary() of the workers
    workers: str = ""                        # e.g. "2 processes × 1 thread"
    outcomes: dict[Key, SeedOutcome]
    environments: dict[str, list[str]] = Field(default_factory=dict)


def outcomes_of(run: StudyRun) -> dict[Key, SeedOutcome]:
    """This run's (set, seed) outcomes as a results file would hold them."""
    out: dict[Key, SeedOutcome] = {}
    for r in run.sims:
        m = r.result
        out[(r.set, r.seed)] = SeedOutcome(
            outputs=plain_json(m.outputs), process_task_count=m.process_task_count,
            pid=m.pid, executor=m.executor, env_digest=m.env_digest)
    for f in run.failures:
        out[(f.set, f.seed)] = SeedOutcome(error_type=f.error_type)
    return out


def view_of(run: StudyRun, label: str, mode: str = "", workers: str = "") -> RunView:
    return RunView(label=label, inputs=run.inputs, mode=mode, workers=workers,
                   outcomes=outcomes_of(run), environments=run.environments)


def results_document(run: StudyRun, *, values: list[str], sets: list[str], mode: str,
                     config: Mapping[str, str], expected_workers: int,
                     expected_threads: int) -> dict[str, Any]:
    """The ``--results`` file's content."""
    return {"format": RESULTS_FORMAT, "values": values, "sets": sets, "mode": mode,
            "config": dict(config), "expected_workers": expected_workers,
            "expected_threads": expected_threads, **plain_json(run.model_dump())}


# -- reading a results file ---------------------------------------------------------------

class _StoredResult(BaseModel):
    outputs: Any
    process_task_count: int | None = None
    pid: int | None = None
    executor: str | None = None
    env_digest: str = ""


class _StoredSim(BaseModel):
    seed: int
    set: str = SINGLE_SET
    result: _StoredResult


class _ResultsFile(BaseModel):
    """The part of a results file comparisons read (format 1 files have no ``format``)."""

    format: int = 1
    sims: list[_StoredSim]
    failures: list[FailureRecord] = Field(default_factory=list)
    inputs: RunInputs | None = None
    mode: str = ""
    expected_workers: int | None = None
    expected_threads: int | None = None
    environments: dict[str, list[str]] = Field(default_factory=dict)


def load_run(path: Path, what: str = "--compare") -> RunView:
    """A results file written by ``--results`` (any format this version reads)."""
    path = Path(path)
    try:
        stored = _ResultsFile.model_validate(json.loads(path.read_text()))
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                            for e in exc.errors()[:3])
        raise LocalModeError(f"{what} {path}: not a results file ({problem}); pass a "
                             "file written by an earlier run with --results") from None
    except (OSError, ValueError) as exc:
        raise LocalModeError(
            f"{what} {path}: not a results file ({type(exc).__name__}: {exc}); pass a "
            "file written by an earlier run with --results") from None
    if not 1 <= stored.format <= RESULTS_FORMAT:
        raise LocalModeError(
            f"{what} {path}: results file format {stored.format} is not one this "
            f"modelops-runtime reads (1..{RESULTS_FORMAT}); it was written by a newer "
            "version: upgrade modelops-runtime, or write a new baseline with --results")
    outcomes: dict[Key, SeedOutcome] = {}
    for s in stored.sims:
        outcomes[(s.set, s.seed)] = SeedOutcome(**s.result.model_dump())
    for f in stored.failures:
        outcomes[(f.set, f.seed)] = SeedOutcome(error_type=f.error_type)
    workers = ""
    if stored.expected_workers is not None:
        workers = f"{stored.expected_workers} processes, {stored.expected_threads} threads"
    return RunView(label=str(path), format=stored.format, inputs=stored.inputs,
                   mode=stored.mode, workers=workers, outcomes=outcomes,
                   environments=stored.environments)
