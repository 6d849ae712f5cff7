"""Submit a study's SimTasks and aggregate their outputs.

Worker-side task functions (:func:`run_simulation`, :func:`run_aggregation`) hand the
call to the worker process's executor (built by the ``modelops`` plugin); bundles are
fetched on the worker from its own MODELOPS_BUNDLE_REPO.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..models import Call, SimResult, SimTask, check_bundle_ref, check_entrypoint

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
    from ..worker.runtime import current_executor

    return _on_worker(current_executor().run(Call.for_sim(task)))


def run_aggregation(results: Sequence[SimResult | Any], bundle: str, entrypoint: str) -> SimResult:
    """Call ``entrypoint(list_of_outputs)`` from ``bundle`` (runs on the worker)."""
    from ..worker.runtime import current_executor

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
