"""Client API: submit a study's SimTasks, aggregate their outputs, gather with progress.

Worker-side task functions (:func:`run_simulation`, :func:`run_aggregation`) hand the
call to the worker process's executor (built by the ``modelops`` plugin); bundles are
fetched on the worker from its own MODELOPS_BUNDLE_REPO.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from .models import Call, SimResult, SimTask, check_bundle_ref, check_entrypoint

AGGREGATION_RESOURCE = {"aggregation": 1}


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
    from .plugin import current_executor

    return _on_worker(current_executor().run(Call.for_sim(task)))


def run_aggregation(results: Sequence[SimResult | Any], bundle: str, entrypoint: str) -> SimResult:
    """Call ``entrypoint(list_of_outputs)`` from ``bundle`` (runs on the worker)."""
    from .plugin import current_executor

    outputs = [r.outputs if isinstance(r, SimResult) else r for r in results]
    call = Call(bundle=bundle, entrypoint=entrypoint, args=(outputs,), kind="aggregation")
    return _on_worker(current_executor().run(call))


# -- client side -----------------------------------------------------------------------

_STUDY = re.compile(r"^[A-Za-z0-9_.]+$")


def _check_study(study: str) -> str:
    if not _STUDY.match(study):
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


def aggregate(client, futures: Sequence, bundle: str, entrypoint: str, **kwargs):
    """Submit ``entrypoint(list of outputs)`` over ``futures`` (or SimResults).

    The task requests the Dask resource ``aggregation=1``, so it only runs on workers
    started with ``--resources aggregation=1`` (the chart's aggregation workers)."""
    from dask.base import tokenize

    check_bundle_ref(bundle)
    check_entrypoint(entrypoint)
    inputs = list(futures)
    ids = [getattr(f, "key", f) for f in inputs]
    key = f"modelops-aggregate-{tokenize(bundle, entrypoint, ids)}"
    return client.submit(run_aggregation, inputs, bundle, entrypoint, key=key,
                         resources=AGGREGATION_RESOURCE, **kwargs)


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


def _error_of(future, value) -> BaseException:
    # as_completed(raise_errors=False) yields sys.exc_info()-style tuples for errors
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    if isinstance(value, BaseException):
        return value
    return RuntimeError(f"task {future.key} ended with status {future.status}")


def gather_study(client, futures: Sequence, progress: bool = True, desc: str = "study") -> StudyResult:
    """Wait for every future (with a tqdm progress bar) and collect results and failures."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = list(futures)
    positions: dict[str, list[int]] = {}
    for i, f in enumerate(futures):
        positions.setdefault(f.key, []).append(i)
    outcome: dict[int, SimResult] = {}
    failures: list[TaskFailure] = []
    seen: set[str] = set()
    with tqdm(total=len(futures), desc=desc, unit="task", disable=not progress) as bar:
        for future, value in as_completed(futures, with_results=True, raise_errors=False):
            if future.key in seen:
                continue
            seen.add(future.key)
            idx = positions[future.key]
            if future.status == "finished":
                for i in idx:
                    outcome[i] = value
            else:
                err = _error_of(future, value)
                failures.extend(
                    TaskFailure(index=i, key=str(future.key), error_type=type(err).__name__,
                                message=str(err), error=err) for i in idx)
            bar.update(len(idx))
            if failures:
                bar.set_postfix(failed=len(failures))
    order = sorted(outcome)
    return StudyResult(results=[outcome[i] for i in order], indices=order,
                       failures=sorted(failures, key=lambda f: f.index), total=len(futures))
