"""Submit a study's SimTasks and aggregate their outputs.

Worker-side task functions (:func:`run_simulation`, :func:`run_aggregation`) hand the
call to the worker process's executor (built by the ``modelops`` plugin); bundles are
fetched on the worker from its own MODELOPS_BUNDLE_REPO.

Two ways to submit: :func:`submit` (a list of SimTasks, all at once) and
:func:`submit_study` (a :class:`~.plan.StudyPlan` of sets × seeds, submitted in batches as
runs finish, so that at most ``window`` runs exist at any time, whatever the study's size).

:func:`submit_study` also groups runs of tiny models into one Dask task each
(:func:`run_simulations`; Dask's per-task cost, ~1 ms, would otherwise set the pace): a
probe of a few runs per worker thread first, then one size for the rest of the study from
the rule in batching.py (about ``batch_target`` seconds per task). Each run is still its own
:class:`RunOutcome` (its own result or typed failure, with its own key); a batch lost with
its worker is run again by Dask as a whole, giving the same per-run outcomes.

With ``store=`` (a directory or fsspec URL, see store/store.py) every finished run is
written to the study's results store as it arrives, and only the runs the store lacks are
submitted (resume).
"""

from __future__ import annotations

import contextlib
import itertools
from asyncio import CancelledError
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..errors import ModelOpsError
from ..models import Call, SimResult, SimTask, check_bundle_ref, check_entrypoint
from .batching import BATCH_TARGET, PROBE_RUNS, BatchPlan, given, plan_batches
from ..errors import SchedulerLost
from .outcomes import RunFailure, RunOutcome, error_of, failed, scheduler_lost
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
    from ..worker.hooks.runtime import current_executor

    return _on_worker(current_executor().run(Call.for_sim(task)))


def run_simulations(tasks: Sequence[SimTask]) -> list[SimResult | Exception]:
    """Run a batch of SimTasks with this worker process's executor (runs on the worker;
    prod-warm: in one round trip to one warm process): one entry per task, its SimResult or
    the error it raised, so each run keeps its own outcome. A stopping worker fails the
    whole batch (Dask runs it again elsewhere)."""
    from ..worker.hooks.runtime import current_executor

    results = current_executor().run_many([Call.for_sim(task) for task in tasks])
    return [r if isinstance(r, Exception) else _on_worker(r) for r in results]


def run_aggregation(results: Sequence[SimResult | Any], bundle: str, entrypoint: str) -> SimResult:
    """Call ``entrypoint(list_of_outputs)`` from ``bundle`` (runs on the worker)."""
    from ..worker.hooks.runtime import current_executor

    outputs = [r.outputs if isinstance(r, SimResult) else r for r in results]
    call = Call(bundle=bundle, entrypoint=entrypoint, args=(outputs,), kind="aggregation")
    return _on_worker(current_executor().run(call))


# -- client side -----------------------------------------------------------------------


class StudyStopped(ModelOpsError):
    """A stored study's runs were dropped by the cluster (e.g. the scheduler was lost):
    what finished is in the store; running the study again resumes it."""


def _cancelled(error: BaseException | None) -> bool:
    import asyncio
    import concurrent.futures

    return isinstance(error, (asyncio.CancelledError, concurrent.futures.CancelledError))

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
    stopping early (``break``, an error, Ctrl-C) cancels the runs still in flight. A lost
    scheduler ends the iteration with :class:`~modelops_runtime.errors.SchedulerLost`
    (nothing more is submitted to a client without a scheduler).

    Unless ``batch`` fixes the runs per Dask task, a probe runs first (one task of
    PROBE_RUNS runs per worker thread); once every probe task is back, the batch plan
    (batching.py) fixes the size for the rest of the study, and ``batching`` holds it."""

    def __init__(self, client, plan: StudyPlan, window: int = DEFAULT_WINDOW, *,
                 batch: int | None = None, batch_target: float = BATCH_TARGET,
                 store: Any = None, retry_failed: bool = False, **kwargs) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (runs in flight), got {window}")
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be >= 1 (runs per Dask task) or None (measured), "
                             f"got {batch}")
        if batch_target <= 0:
            raise ValueError(f"batch_target must be > 0 seconds, got {batch_target}")
        self.client, self.plan, self.window, self.kwargs = client, plan, window, kwargs
        self.batch, self.batch_target = batch, batch_target
        self.submitted = 0          # runs submitted so far
        self.max_in_flight = 0      # most runs submitted and not yet finished, at once
        self.tasks = 0              # Dask tasks submitted (fewer than runs when batched)
        self.finished = 0           # runs whose outcome was handed out
        self.batching: BatchPlan | None = None if batch is None else given(batch)
        self._consumed = False
        self.store = None           # the results store (store/store.py), if any
        self.resumed = (0, 0)       # (ok, failed) runs the store held when opened
        self._todo = plan.run_count
        self.key_name = plan.name   # the study's part of every Dask key
        if store is not None:
            import uuid

            from .store.store import ResultsStore

            # a session's own keys: a stopped session's cancelled futures (same client,
            # same keys) must not cancel the runs a resumed session submits
            self.key_name = f"{plan.name}.{uuid.uuid4().hex[:8]}"

            self.store = store if isinstance(store, ResultsStore) else \
                ResultsStore.open(store, plan)
            if retry_failed:
                self.store.drop_failed()
            ok, failed, missing = self.store.counts()
            self.resumed, self._todo = (ok, failed), missing

    @property
    def total(self) -> int:
        """Runs this submission runs (with a store: the ones it lacks)."""
        return self._todo

    def _runs(self) -> Iterator[tuple[ParamSet, int]]:
        return self.plan.runs() if self.store is None else self.store.todo(self.plan)

    def _slots(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - e.g. a client without a scheduler answer
            return 1

    def _submit(self, batch: list[tuple[ParamSet, int]], size: int,
                grouped: bool = False) -> list[tuple[Any, list]]:
        """Submit runs as Dask tasks of ``size`` runs: (future, its runs) per task, in order
        (``grouped``: through :func:`run_simulations` even for one run, so that each run
        reports its own model time)."""
        plan = self.plan
        if size == 1 and not grouped:
            keys = [run_key(self.key_name, s.id, seed, plan.code) for s, seed in batch]
            futures = self.client.map(run_simulation, [plan.task(s, seed) for s, seed in batch],
                                      key=keys, **self.kwargs)
            self.tasks += len(futures)
            return [(f, [run]) for f, run in zip(futures, batch)]
        from dask.base import tokenize

        groups = [batch[i:i + size] for i in range(0, len(batch), size)]
        keys = [f"modelops-runs-{self.key_name}-{tokenize([(s.id, seed) for s, seed in g])}-"
                f"{plan.code}" for g in groups]
        futures = self.client.map(run_simulations,
                                  [[plan.task(s, seed) for s, seed in g] for g in groups],
                                  key=keys, **self.kwargs)
        self.tasks += len(futures)
        return list(zip(futures, groups))

    def _values(self, futures: list) -> list[tuple[Any, Any]]:
        """(future, its value) for finished tasks: the results of all that finished fetched
        in one ``gather`` (one round trip per worker, not one per task: issue #30), the
        error for the others; a batch whose gather fails goes one by one."""
        ok = [f for f in futures if f.status == "finished"]
        values: dict[str, Any] = {}
        if ok:
            with contextlib.suppress(Exception):
                values = dict(zip([f.key for f in ok], self.client.gather(ok)))
        out = []
        for f in futures:
            if f.key in values:
                out.append((f, values[f.key]))
                continue
            try:
                out.append((f, f.result()))
            except (Exception, CancelledError) as exc:  # noqa: BLE001 - that task's failure
                out.append((f, exc))
        return out

    def __iter__(self) -> Iterator[RunOutcome]:
        if self._consumed:
            raise RuntimeError("a StudySubmission is consumed once; call submit_study again")
        self._consumed = True
        if self.store is None:
            yield from self._outcomes()
            return
        try:
            for out in self._outcomes():
                if not out.ok and _cancelled(out.failure.error):
                    # not an outcome of the run: the cluster dropped it (scheduler lost,
                    # or cancelled from outside); never stored as a failure, run on resume
                    self.store.flush()
                    ok, failed, missing = self.store.counts()
                    raise StudyStopped(
                        f"the cluster dropped the runs in flight ({out.failure.error_type}: "
                        f"{out.failure.message}); {ok + failed:,} of {self.plan.run_count:,} "
                        f"runs are in {self.store.url}, {missing:,} are not: run the same "
                        "study again with this store to resume")
                self.store.add(out)     # kept before anyone sees it; written in parts
                yield out
        except SchedulerLost as exc:
            self.store.flush()
            ok, failed, _ = self.store.counts()
            raise SchedulerLost(
                f"{exc.message} The results store {self.store.url} holds {ok + failed:,} of "
                f"{self.plan.run_count:,} runs: run the same study again with it to resume.",
                **exc.fields) from None
        finally:
            self.store.flush()

    def _outcomes(self) -> Iterator[RunOutcome]:
        from distributed import as_completed

        runs = self._runs()
        plan = self.plan
        pending: dict[str, tuple[list[tuple[ParamSet, int]], Any]] = {}
        probes: dict[str, list[float]] = {}  # probe task key → its successful runs' times
        in_flight = 0  # runs (not tasks) submitted and not yet finished
        done = as_completed()  # results fetched per batch of finished tasks (_values)
        top_up_at = max(1, self.window // 4)

        def lost() -> SchedulerLost:
            pending.clear()  # distributed's client cancelled them all: nothing to cancel
            return scheduler_lost(self.client, finished=self.finished, total=self.total,
                                  what=f"study {plan.name!r}")

        def submit(batch: list, size: int, grouped: bool = False) -> list:
            nonlocal in_flight
            if getattr(self.client, "status", "running") != "running":
                raise lost()  # a future submitted now would wait for a scheduler forever
            tasks = self._submit(batch, size, grouped)
            for future, group in tasks:
                pending[future.key] = (group, future)
                done.add(future)
            in_flight += len(batch)
            self.submitted += len(batch)
            self.max_in_flight = max(self.max_in_flight, in_flight)
            return tasks

        def top_up() -> None:
            size = self.batching.size
            room = self.window - in_flight
            if size <= room:  # whole tasks: the last one of a top-up is not a short one
                room -= room % size
            batch = list(itertools.islice(runs, room))
            if batch:
                submit(batch, size)

        def outcome(s: ParamSet, seed: int, result: Any = None,
                    err: BaseException | None = None) -> RunOutcome:
            key = run_key(self.key_name, s.id, seed, plan.code)
            self.finished += 1
            if err is None:
                return RunOutcome(set=s, seed=seed, key=key, result=result)
            return RunOutcome(set=s, seed=seed, key=key, failure=RunFailure(
                set_id=s.id, seed=seed, key=key, error_type=type(err).__name__,
                message=str(err), error=err))

        try:
            if self.batching is None:  # the probe: PROBE_RUNS runs per thread
                slots = self._slots()
                per = PROBE_RUNS if self.total >= PROBE_RUNS * slots else 1
                batch = list(itertools.islice(runs, min(self.window, per * slots)))
                for future, _ in submit(batch, per, grouped=True):
                    probes[future.key] = []
            else:
                top_up()
            for finished in done.batches():
                for future, value in self._values(finished):
                    group, _ = pending.pop(future.key)
                    in_flight -= len(group)
                    times = probes.get(future.key)
                    if failed(future, value):
                        # the whole task failed: each run did
                        err = error_of(future, value)
                        if isinstance(err, SchedulerLost):  # and every run still in flight
                            raise lost() from None
                        for s, seed in group:
                            yield outcome(s, seed, err=err)
                    elif len(group) == 1 and isinstance(value, SimResult):
                        yield outcome(*group[0], result=value)
                    else:
                        for (s, seed), item in zip(group, value):
                            if isinstance(item, BaseException):
                                yield outcome(s, seed, err=item)
                            else:
                                if times is not None:
                                    times.append(item.duration_s)
                                yield outcome(s, seed, result=item)
                    del future, value
                del finished
                if self.batching is None:
                    if any(k in pending for k in probes):
                        continue  # the plan waits for every probe task
                    self.batching = plan_batches(
                        list(probes.values()), left=self.total - self.submitted,
                        slots=self._slots(), window=self.window, target=self.batch_target)
                    top_up()
                elif self.window - in_flight >= top_up_at:
                    top_up()
        finally:
            if pending:   # stopped early: nothing of this study keeps running
                self.client.cancel([f for _, f in pending.values()])
                pending.clear()


def submit_study(client, plan: StudyPlan, *, window: int = DEFAULT_WINDOW,
                 batch: int | None = None, batch_target: float = BATCH_TARGET,
                 store: Any = None, retry_failed: bool = False,
                 **kwargs) -> StudySubmission:
    """The plan's runs, submitted lazily in a bounded window (see :class:`StudySubmission`);
    hand the result to :func:`~modelops_runtime.client.gather_study`, or iterate it for
    each run as it finishes. ``batch``: runs per Dask task (None: measured, about
    ``batch_target`` seconds per task; 1: never grouped). ``store``: a results store URL
    (a directory or any fsspec URL) or an open ResultsStore: runs are written there as they
    finish and only the runs it lacks are submitted (its failed runs too with
    ``retry_failed``); gather_study then holds no results, only counts. Extra ``kwargs``
    go to ``client.map`` (e.g. ``retries``)."""
    return StudySubmission(client, plan, window, batch=batch, batch_target=batch_target,
                           store=store, retry_failed=retry_failed, **kwargs)
