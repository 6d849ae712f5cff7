"""Gather a study's results with a progress bar: successes in order, every failure kept.

For a :class:`~.submit.StudySubmission` (sets × seeds): results per (set, seed), failures
listed per set, each set's aggregate submitted as soon as its last run finished (over its
successful runs only) and the aggregate across sets once at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from pydantic import BaseModel, ConfigDict

from ..models import SimResult
from ..errors import SchedulerLost
from .outcomes import SetResult, StudySetsResult, error_of, failed, scheduler_lost
from .submit import StudySubmission, aggregate


class TaskFailure(BaseModel):
    """One task that did not produce a result."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    index: int             # position in the submitted list
    key: str
    error_type: str
    message: str
    error: BaseException   # the typed error (e.g. SimulationError with remote_traceback)


class StudyResult(BaseModel):
    """Successes in submission order plus every failure; failures never hide successes."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    results: list[SimResult]
    indices: list[int]      # submission index of each entry of ``results``
    failures: list[TaskFailure]
    total: int

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def outputs(self) -> list[Any]:
        return [r.outputs for r in self.results]


_error_of = error_of


@overload
def gather_study(client, futures: StudySubmission, progress: bool = True,
                 desc: str | None = None) -> StudySetsResult: ...
@overload
def gather_study(client, futures: Sequence, progress: bool = True,
                 desc: str | None = None) -> StudyResult: ...


def gather_study(client, futures, progress: bool = True, desc: str | None = None):
    """Wait for every run (a bar on a terminal, plain periodic lines otherwise) and collect
    results and failures.

    ``futures``: what :func:`~.submit.submit_study` returned (→ :class:`StudySetsResult`,
    per set, with aggregates), or a list of futures from :func:`~.submit.submit`
    (→ :class:`StudyResult`, in submission order). A submission with a results store
    gives a :class:`~.stored.StoredStudyResult` (counts and aggregates; the runs are in
    the store). A lost scheduler raises :class:`~modelops_runtime.errors.SchedulerLost`
    (one line; ``partial``: what was gathered before, in the same result type)."""
    if isinstance(futures, StudySubmission) and futures.store is not None:
        from .stored import gather_stored

        return gather_stored(client, futures, progress, desc or futures.plan.name)
    if isinstance(futures, StudySubmission):
        return _gather_sets(client, futures, progress, desc or futures.plan.name)
    return _gather_list(futures, progress, desc or "study")


def _gather_list(futures: Sequence, progress: bool, desc: str) -> StudyResult:
    from distributed import as_completed

    from .progress import StudyProgress

    futures = list(futures)
    positions: dict[str, list[int]] = {}
    for i, f in enumerate(futures):
        positions.setdefault(f.key, []).append(i)
    outcome: dict[int, SimResult] = {}
    failures: list[TaskFailure] = []
    seen: set[str] = set()
    # a bar on a terminal, plain periodic lines in a log (never hundreds of redraws)
    bar = StudyProgress(desc, len(futures), sets=None, enabled=progress)
    try:
        for future, value in as_completed(futures, with_results=True, raise_errors=False):
            if future.key in seen:
                continue
            seen.add(future.key)
            idx = positions[future.key]
            ok = not failed(future, value)  # a result, whatever the status turned to since
            if ok:
                for i in idx:
                    outcome[i] = value
            else:
                err = _error_of(future, value)
                failures.extend(
                    TaskFailure(index=i, key=str(future.key), error_type=type(err).__name__,
                                message=str(err), error=err) for i in idx)
            for _ in idx:
                bar.run(ok)
    finally:
        bar.close()
    order = sorted(outcome)
    result = StudyResult(results=[outcome[i] for i in order], indices=order,
                         failures=sorted(failures, key=lambda f: f.index), total=len(futures))
    if any(isinstance(f.error, SchedulerLost) for f in failures):
        lost = scheduler_lost(futures[0].client, finished=len(outcome) + sum(
            not isinstance(f.error, SchedulerLost) for f in failures), total=len(futures),
            what="the study")
        lost.partial = result
        raise lost
    return result


def _settle(future) -> tuple[SimResult | None, str | None]:
    """An aggregate future's result, or its error as one line."""
    try:
        return future.result(), None
    except Exception as exc:  # noqa: BLE001 - reported next to the runs, which stay valid
        exc = error_of(future, exc)
        return None, f"{type(exc).__name__}: {exc}"


def _gather_sets(client, sub: StudySubmission, progress: bool, desc: str) -> StudySetsResult:
    from .progress import StudyProgress

    plan = sub.plan
    n_seeds, n_sets = plan.seeds.count, plan.set_count
    sets: dict[str, SetResult] = {}
    left: dict[str, int] = {}
    agg_futures: dict[str, Any] = {}
    finished_sets = failed = 0
    bar = StudyProgress(desc, sub.total, sets=n_sets, enabled=progress)
    try:
        for out in sub:
            sid = out.set.id
            if sid not in sets:
                sets[sid] = SetResult(set=out.set, results={}, failures=[])
                left[sid] = n_seeds
            entry = sets[sid]
            if out.ok:
                entry.results[out.seed] = out.result
            else:
                entry.failures.append(out.failure)
                failed += 1
            left[sid] -= 1
            if not left[sid]:
                finished_sets += 1
                del left[sid]
                entry.failures.sort(key=lambda f: f.seed)
                if plan.aggregate and entry.results:
                    agg_futures[sid] = aggregate(
                        client, entry.outputs, plan.bundle, plan.aggregate,
                        key=f"modelops-aggregate-{plan.name}-{sid}-{plan.code}")
                elif plan.aggregate:
                    entry.aggregate_error = "every run of this set failed: nothing to aggregate"
            bar.run(out.ok, set_complete=sid not in left)
    except SchedulerLost as exc:
        exc.partial = StudySetsResult(plan=plan, sets=sorted(
            sets.values(), key=lambda s: s.set.index), max_in_flight=sub.max_in_flight)
        raise
    finally:
        bar.close()
    for sid, future in agg_futures.items():
        sets[sid].aggregate, sets[sid].aggregate_error = _settle(future)
    ordered = sorted(sets.values(), key=lambda s: s.set.index)
    result = StudySetsResult(plan=plan, sets=ordered, max_in_flight=sub.max_in_flight)
    if plan.aggregate_sets:
        done = [s for s in ordered if s.aggregate is not None]
        if done:
            inputs = [{"set_id": s.set.id, "label": s.set.label, "params": dict(s.set.params),
                       "runs": len(s.results), "failed": len(s.failures),
                       "aggregate": s.aggregate.outputs} for s in done]
            result.across, result.across_error = _settle(aggregate(
                client, inputs, plan.bundle, plan.aggregate_sets,
                key=f"modelops-aggregate-sets-{plan.name}-{plan.code}"))
        else:
            result.across_error = "no set has an aggregate: nothing to aggregate across sets"
    return result
