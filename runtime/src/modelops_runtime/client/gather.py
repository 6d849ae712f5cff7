"""Gather a study's results with a progress bar: successes in order, every failure kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..models import SimResult


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
