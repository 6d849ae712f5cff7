"""Gather a study whose runs go to a results store: counts only (no results held), the
progress, then each set's aggregate computed from the store (so a study run in one go or
in five gets the same aggregates), kept in the store's ``aggregates.json``.

- covers: :func:`gather_stored` (what gather_study does for a submission with a store);
  :class:`StoredStudyResult`; the "resuming: ..." line.
- does not: write runs (the submission does, store/store.py).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..models import SimResult
from .plan import StudyPlan
from .progress import StudyProgress
from .store.manifest import AGGREGATES
from .store.parts import to_json
from .store.store import ResultsStore
from .submit import StudySubmission, aggregate

AGGREGATE_WINDOW = 4   # set aggregates in flight at once (each holds its set's outputs)


class StoredSet(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    set_id: str
    label: str | None = None
    index: int = 0
    ok: int
    failed: int
    missing: int
    aggregate: SimResult | None = None
    aggregate_error: str | None = None


class StoredStudyResult(BaseModel):
    """A study gathered into a store: counts per set, aggregates (from the store)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    plan: StudyPlan
    url: str
    ran: int                 # runs finished in this session
    resumed: int             # runs the store held before (ok or failed)
    ok: int
    failed: int
    missing: int
    sets: list[StoredSet]
    across: SimResult | None = None
    across_error: str | None = None
    max_in_flight: int = 0
    dask_tasks: int = 0

    @property
    def complete(self) -> bool:
        return self.missing == 0


def resume_line(sub: StudySubmission) -> str | None:
    """"resuming: 61,204 of 100,000 runs done, 38,796 to go" (None: a fresh store)."""
    ok, failed = sub.resumed
    if not ok + failed:
        return None
    total = sub.plan.run_count
    extra = f" ({failed:,} failed, not rerun; --retry-failed reruns them)" if failed else ""
    return (f"resuming from {sub.store.url}: {ok + failed:,} of {total:,} runs done{extra}, "
            f"{sub.total:,} to go")


def gather_stored(client, sub: StudySubmission, progress: bool, desc: str,
                  file=None, announce: bool = True) -> StoredStudyResult:
    """Consume ``sub`` (runs go to its store), then aggregate from the store once no run
    is missing. ``announce``: print the "resuming: ..." line with the progress."""
    store, plan = sub.store, sub.plan
    left: dict[str, int] = {}
    for s in store.manifest.inputs.sets:
        missing = store.set_counts(s.id)[2]
        if missing:
            left[s.id] = missing
    ok0, failed0 = sub.resumed
    bar = StudyProgress(desc, plan.run_count, sets=plan.set_count, done=ok0 + failed0,
                        failed=failed0, sets_done=plan.set_count - len(left),
                        enabled=progress, file=file)
    line = resume_line(sub)
    if line and progress and announce:
        print(line, file=bar.file, flush=True)
    ran = 0
    try:
        for out in sub:
            ran += 1
            sid = out.set.id
            left[sid] -= 1
            bar.run(out.ok, set_complete=not left[sid])
    finally:
        bar.close()
    ok, failed, missing = store.counts()
    sets = []
    for i, s in enumerate(store.manifest.inputs.sets):
        s_ok, s_failed, s_missing = store.set_counts(s.id)
        sets.append(StoredSet(set_id=s.id, label=s.label, index=i, ok=s_ok, failed=s_failed,
                              missing=s_missing))
    result = StoredStudyResult(plan=plan, url=store.url, ran=ran, resumed=ok0 + failed0,
                               ok=ok, failed=failed, missing=missing, sets=sets,
                               max_in_flight=sub.max_in_flight, dask_tasks=sub.tasks)
    if missing == 0 and plan.aggregate:
        aggregate_from_store(client, store, plan, result)
    return result


def set_outputs(store: ResultsStore):
    """(set id, outputs in seed order) of every set with a successful run, read
    column-wise from the store (the exact outputs, from the ``outputs`` column)."""
    import pyarrow.compute as pc

    table = store.table(columns=["set_id", "seed", "ok", "outputs"])
    table = table.filter(pc.equal(table["ok"], True))
    grouped = table.group_by("set_id").aggregate([("seed", "list"), ("outputs", "list")])
    for i in range(grouped.num_rows):
        row = grouped.slice(i, 1).to_pylist()[0]
        pairs = sorted(zip(row["seed_list"], row["outputs_list"]))
        yield row["set_id"], [json.loads(o) for _, o in pairs]


def _settle(future) -> tuple[SimResult | None, str | None]:
    try:
        return future.result(), None
    except Exception as exc:  # noqa: BLE001 - reported next to the runs, which stay valid
        return None, f"{type(exc).__name__}: {exc}"


def aggregate_from_store(client, store: ResultsStore, plan: StudyPlan,
                         result: StoredStudyResult) -> None:
    by_id = {s.set_id: s for s in result.sets}
    pending: list[tuple[str, Any]] = []

    def settle_one() -> None:
        sid, future = pending.pop(0)
        by_id[sid].aggregate, by_id[sid].aggregate_error = _settle(future)

    for sid, outputs in set_outputs(store):
        pending.append((sid, aggregate(client, outputs, plan.bundle, plan.aggregate,
                                       key=f"modelops-aggregate-{plan.name}-{sid}-{plan.code}")))
        if len(pending) >= AGGREGATE_WINDOW:
            settle_one()
    while pending:
        settle_one()
    for s in result.sets:
        if s.aggregate is None and s.aggregate_error is None:
            s.aggregate_error = "every run of this set failed: nothing to aggregate"
    if plan.aggregate_sets:
        done = [s for s in result.sets if s.aggregate is not None]
        params = {s.id: s.params for s in store.manifest.inputs.sets}
        if done:
            inputs = [{"set_id": s.set_id, "label": s.label, "params": dict(params[s.set_id]),
                       "runs": s.ok, "failed": s.failed, "aggregate": s.aggregate.outputs}
                      for s in done]
            result.across, result.across_error = _settle(aggregate(
                client, inputs, plan.bundle, plan.aggregate_sets,
                key=f"modelops-aggregate-sets-{plan.name}-{plan.code}"))
        else:
            result.across_error = "no set has an aggregate: nothing to aggregate across sets"
    doc = {"inputs_digest": store.manifest.inputs_digest,
           "sets": {s.set_id: {"runs": s.ok, "failed": s.failed,
                               "aggregate": s.aggregate.model_dump() if s.aggregate else None,
                               "error": s.aggregate_error} for s in result.sets},
           "across": {"aggregate": result.across.model_dump() if result.across else None,
                      "error": result.across_error} if plan.aggregate_sets else None}
    store.put_json(AGGREGATES, to_json(doc).encode())
