"""Submit a study's SimTasks and aggregate their outputs.

Worker-side task functions (:func:`run_simulation`, :func:`run_aggregation`) hand the
call to the worker process's executor (built by the ``modelops`` plugin); bundles are
fetched on the worker from its own MODELOPS_BUNDLE_REPO.

Two ways to submit: :func:`submit` (a list of SimTasks, all at once) and
:func:`submit_study` (a :class:`~.plan.StudyPlan` of sets × seeds, submitted in batches as
runs finish, so that at most ``window`` runs exist at any time, whatever the study's size).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..models import Call, SimResult, SimTask, check_bundle_ref, check_entrypoint
from .outcomes import RunFailure, RunOutcome, error_of
from .plan import ParamSet, StudyPlan, run_key

AGGREGATION_RESOURCE = {"aggregation": 1}
DEFAULT_WINDOW = 1000      # runs submitted and not yet finished, at most (submit_study)


# -- worker side -----------------------------------------------------------------------


def _on_worker(result: SimResult) -> SimResult:
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:  # not inside a Dask worker (called directly)
        address = ""
    return result.model_copy(update={"worker": address})


def run_simulation(task: SimTask) -> SimResult:
    """Run one SimTask with this worker process's executor (runs on the worker)."""
    from ..worker.runtime import current_executor

    return _on_worker(current_executor().run(Call.for_sim(task)))


def run_aggregation(results: Sequence[SimResult | Any], bundle: str, entrypoint: str) -> SimResult:
    """Call ``entrypoint(list_of_outputs)`` from ``bundle`` (runs on the worker)."""
    from ..worker.runtime import current_executor

    outputs = [r.outputs if isinstance(r, SimResult) else r for r in results]
    call = Call(bundle=bundle, entrypoint=entrypoint, args=(outputs,), kind="aggregation")
    return _on_worker(current_executor().run(call))


# -- client side -----------------------------------------------------------------------

_STUDY = re.compile(r"[A-Za-z0-9_.]+")  # fullmatch: `$` would accept a trailing newline


def _check_study(study: str) -> str:
    if not _STUDY.fullmatch(study):
        raise ValueError(f"study name {study!r} may only hold letters, digits, '_' and '.'")
    return study


def task_key(task: SimTask, study: str) -> str:
    """The Dask key of ``task`` in ``study``: unique per study, the same for the same task."""
    return f"modelops-sim-{_check_study(study)}-{task.digest()}"


def submit(client, tasks: Iterable[SimTask], *, study: str = "study", **kwargs) -> list:
    """Submit every task; returns one future per task, in order.

    Identical tasks get the same key (and so one computation); extra ``kwargs`` go to
    ``client.map`` (e.g. ``retries``, ``priority``)."""
    tasks = list(tasks)
    if not all(isinstance(t, SimTask) for t in tasks):
        raise TypeError("submit() takes SimTask objects; build them with SimTask(bundle=..., "
                        "entrypoint=..., params=..., seed=...)")
    if not tasks:
        return []
    keys = [task_key(t, study) for t in tasks]
    return client.map(run_simulation, tasks, key=keys, **kwargs)


def aggregate(client, futures: Sequence, bundle: str, entrypoint: str, *,
              key: str | None = None, **kwargs):
    """Submit ``entrypoint(list of outputs)`` over ``futures`` (or SimResults, or plain
    outputs).

    The task requests the Dask resource ``aggregation=1``, so it only runs on workers
    started with ``--resources aggregation=1`` (the chart's aggregation workers)."""
    from dask.base import tokenize

    check_bundle_ref(bundle)
    check_entrypoint(entrypoint)
    inputs = list(futures)
    if key is None:
        ids = [getattr(f, "key", f) for f in inputs]
        key = f"modelops-aggregate-{tokenize(bundle, entrypoint, ids)}"
    return client.submit(run_aggregation, inputs, bundle, entrypoint, key=key,
                         resources=AGGREGATION_RESOURCE, **kwargs)


# -- a study of sets × seeds, in a bounded window -------------------------------------


class StudySubmission:
    """A plan's runs, submitted while they are consumed: iterating yields one
    :class:`RunOutcome` per (set, seed) as runs finish, and tops the cluster up in batches
    so that at most ``window`` runs are submitted and unfinished. Tasks are built only when
    they are submitted: a 100,000-run study never exists as one list. Consumed once;
    stopping early (``break``, an error, Ctrl-C) cancels the runs still in flight."""

    def __init__(self, client, plan: StudyPlan, window: int = DEFAULT_WINDOW, **kwargs) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (runs in flight), got {window}")
        self.client, self.plan, self.window, self.kwargs = client, plan, window, kwargs
        self.submitted = 0          # runs submitted so far
        self.max_in_flight = 0      # most runs submitted and not yet finished, at once
        self._consumed = False

    @property
    def total(self) -> int:
        return self.plan.run_count

    def _submit(self, batch: list[tuple[ParamSet, int]]) -> list:
        """Submit one batch of runs; one future per run, in order. (One place to change
        how runs become Dask tasks.)"""
        plan = self.plan
        keys = [run_key(plan.name, s.id, seed, plan.code) for s, seed in batch]
        return self.client.map(run_simulation, [plan.task(s, seed) for s, seed in batch],
                               key=keys, **self.kwargs)

    def __iter__(self) -> Iterator[RunOutcome]:
        from distributed import as_completed

        if self._consumed:
            raise RuntimeError("a StudySubmission is consumed once; call submit_study again")
        self._consumed = True
        runs = self.plan.runs()
        pending: dict[str, tuple[ParamSet, int, Any]] = {}
        done = as_completed(with_results=True, raise_errors=False)
        batch_size = max(1, self.window // 4)

        def top_up() -> None:
            batch = list(itertools.islice(runs, self.window - len(pending)))
            if not batch:
                return
            for (s, seed), future in zip(batch, self._submit(batch)):
                pending[future.key] = (s, seed, future)
                done.add(future)
            self.submitted += len(batch)
            self.max_in_flight = max(self.max_in_flight, len(pending))

        try:
            top_up()
            for future, value in done:
                s, seed, _ = pending.pop(future.key)
                key = str(future.key)
                if future.status == "finished":
                    yield RunOutcome(set=s, seed=seed, key=key, result=value)
                else:
                    err = error_of(future, value)
                    yield RunOutcome(set=s, seed=seed, key=key, failure=RunFailure(
                        set_id=s.id, seed=seed, key=key, error_type=type(err).__name__,
                        message=str(err), error=err))
                del future, value
                if self.window - len(pending) >= batch_size:
                    top_up()
        finally:
            if pending:   # stopped early: nothing of this study keeps running
                self.client.cancel([f for _, _, f in pending.values()])
                pending.clear()


def submit_study(client, plan: StudyPlan, *, window: int = DEFAULT_WINDOW,
                 **kwargs) -> StudySubmission:
    """The plan's runs, submitted lazily in a bounded window (see :class:`StudySubmission`);
    hand the result to :func:`~modelops_runtime.client.gather_study`, or iterate it for
    each run as it finishes. Extra ``kwargs`` go to ``client.map`` (e.g. ``retries``)."""
    return StudySubmission(client, plan, window, **kwargs)
