"""The batch plan: how many runs :func:`~.submit.submit_study` puts in one Dask task.

- covers: the documented rule (docs/studies.md "Tiny runs are batched") as pure functions — what a
  probe measures, the per-run estimate, the floor, the target, the caps, the quantised
  size — and the plan's one-line description for the summary
- does not: submit or time anything (submit.py runs the probe and applies the plan)
- see also: tests/runtime/test_batching.py (the same study twice gets the same plan)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BATCH_TARGET = 0.1    # s of model time per Dask task when runs are grouped
MAX_BATCH = 1000      # runs per Dask task, at most
PROBE_RUNS = 2        # runs per probe task: its first may pay imports, a later one does not
RUN_FLOOR = 1e-4      # s per run, at least: what a run costs inside a batch besides the model
                      # (task and result encoding, SimResult, the runner's loop; bench/)
STEPS_PER_DOUBLING = 4  # sizes on a grid of 2**(k/4): neighbours differ by ~19 %


def quantise(size: int) -> int:
    """The largest size of the grid ``floor(2**(k/4))`` at or below ``size`` (at least 1):
    a per-run estimate that moves by less than a grid step moves the size by at most one."""
    if size <= 1:
        return 1
    k = math.floor(STEPS_PER_DOUBLING * math.log2(size) + 1e-9)
    return max(1, int(2 ** (k / STEPS_PER_DOUBLING) + 1e-9))


def per_run_estimate(probes: Sequence[Sequence[float]]) -> float | None:
    """Seconds per run from the probe tasks' run times: the fastest run of each probe task
    (its first run may include the model's imports or a process start), then the median
    across probe tasks (one slow thread or machine hiccup does not move it). None when no
    probe run succeeded."""
    best = sorted(min(times) for times in probes if times)
    if not best:
        return None
    mid = len(best) // 2
    return best[mid] if len(best) % 2 else (best[mid - 1] + best[mid]) / 2


@dataclass(frozen=True)
class BatchPlan:
    """Runs per Dask task for the rest of a study, and why."""

    size: int                       # runs per Dask task after the probe
    source: str                     # "given" (batch=N), "measured", "unmeasured"
    run_s: float | None = None      # per-run estimate from the probe
    target: float = BATCH_TARGET
    by_time: int = 0                # quantised size from target / max(run_s, RUN_FLOOR)
    cap: int = 0                    # the smallest of the caps below
    cap_reason: str = ""
    probe_tasks: int = 0
    probe_runs: int = 0

    def describe(self) -> str:
        """One line for the summary."""
        if self.source == "given":
            return f"{self.size} run(s) per Dask task (given: --batch/batch=)"
        probe = f"probe {self.probe_tasks} task(s) of {self.probe_runs} run(s)"
        if self.source == "unmeasured":
            return f"{self.size} run(s) per Dask task ({probe}: no run succeeded to measure)"
        why = (f"run ~{self.run_s * 1e3:.2g} ms (floor {RUN_FLOOR * 1e3:g} ms), "
               f"{self.target:g} s per task -> {self.by_time}")
        if self.size < self.by_time:
            why += f", capped by {self.cap_reason}"
        return f"{self.size} run(s) per Dask task ({probe}; {why})"


def given(size: int) -> BatchPlan:
    return BatchPlan(size=size, source="given")


def plan_batches(probes: Sequence[Sequence[float]], *, left: int, slots: int,
                 window: int, target: float = BATCH_TARGET) -> BatchPlan:
    """The plan for the ``left`` runs after the probe, from the probe tasks' run times:

    size = min(quantise(target / max(estimate, RUN_FLOOR)), MAX_BATCH,
               ceil(left / (2 × slots)), window // slots)

    — about ``target`` seconds per task; never fewer than two tasks per worker thread for
    what is left, and the window holds a task for every thread. The caps depend only on
    the study and the cluster's threads, so the same study on the same cluster gets the
    same plan when its estimate moves by less than a grid step (~19 %), and always when
    runs are faster than the floor."""
    slots = max(1, slots)
    kw = {"target": target, "probe_tasks": len(probes),
          "probe_runs": max((len(p) for p in probes), default=0)}
    estimate = per_run_estimate(probes)
    if estimate is None:
        return BatchPlan(size=1, source="unmeasured", **kw)
    by_time = quantise(int(target / max(estimate, RUN_FLOOR)))
    caps = [(MAX_BATCH, f"at most {MAX_BATCH} runs per task"),
            (max(1, -(-left // (2 * slots))),
             f"two tasks per thread ({slots}) for the {left} runs left"),
            (max(1, window // slots), f"the window ({window} runs) over {slots} thread(s)")]
    cap, reason = min(caps, key=lambda c: c[0])
    return BatchPlan(size=max(1, min(by_time, cap)), source="measured", run_s=estimate,
                     by_time=by_time, cap=cap, cap_reason=reason, **kw)
