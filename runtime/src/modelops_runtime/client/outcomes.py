"""What a study gives back: one :class:`RunOutcome` per (set, seed) as runs finish, and
:class:`StudySetsResult` with every set's successes, failures and aggregate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import SchedulerLost
from ..models import SimResult
from .plan import ParamSet, StudyPlan

# the reason distributed's client cancels every future with when its scheduler connection
# drops (Client._reconnect)
_CONNECTION_LOST = "scheduler-connection-lost"


def error_of(future, value) -> BaseException:
    """The error a finished-with-error future carries (as ``as_completed(raise_errors=False)``
    hands it over: an exc_info tuple); a future cancelled because the scheduler went away
    gives :class:`SchedulerLost` (see :func:`lost_scheduler_error`)."""
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        value = value[1]
    if isinstance(value, BaseException):
        return lost_scheduler_error(future, value) or value
    return RuntimeError(f"task {future.key} ended with status {future.status}")


def failed(future, value) -> bool:
    """Whether a future ``as_completed(with_results=True, raise_errors=False)`` handed over
    failed. Decided by the value, not by ``future.status``: a result whose worker left
    right after it was fetched turns the status to "lost" (or "pending", recomputing),
    yet the value is the run's one result."""
    if isinstance(value, BaseException):
        return True
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return True
    return future.status in ("error", "cancelled") and value is None


def lost_scheduler_error(future, error: BaseException) -> SchedulerLost | None:
    """:class:`SchedulerLost` if ``future`` was cancelled because its client lost the
    scheduler (its connection dropped, or the client is no longer connected), else None."""
    from concurrent.futures import CancelledError  # what distributed cancels with

    if isinstance(error, SchedulerLost):
        return error
    if not isinstance(error, CancelledError):
        return None
    client = getattr(future, "client", None)
    status = getattr(client, "status", "running")
    if getattr(error, "reason", None) != _CONNECTION_LOST and status == "running":
        return None  # cancelled on purpose (client.cancel, a stopped study)
    return scheduler_lost(client)


def scheduler_lost(client, *, finished: int | None = None, total: int | None = None,
                   what: str = "this task") -> SchedulerLost:
    """The one-line error of a lost scheduler: which, what was kept, what to do."""
    address = getattr(getattr(client, "scheduler", None), "address", None) or "(unknown)"
    done = (f"{finished} of {total} runs had finished and are kept (the error's `partial`); "
            "the rest were lost with it. " if finished is not None else "")
    return SchedulerLost(
        f"the Dask scheduler {address} went away while {what} ran (the client lost its "
        "connection: the scheduler exited, was restarted, or is unreachable), and every "
        f"result it had not handed over went with it. {done}Check the scheduler (its pod's "
        "`kubectl describe`/`kubectl logs --previous`, or the local run's scheduler.log), "
        "then submit again once it is back; nothing is wrong with the runs themselves.",
        address=address, finished=finished, total=total)


class RunFailure(BaseModel):
    """One (set, seed) run that did not produce a result."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    set_id: str
    seed: int
    key: str
    error_type: str
    message: str
    error: BaseException | None = None   # the typed error (e.g. SimulationError)


class RunOutcome(BaseModel):
    """One finished run: its set, its seed, and its result or its failure."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    set: ParamSet
    seed: int
    key: str
    result: SimResult | None = None
    failure: RunFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class SetResult(BaseModel):
    """One parameter set's runs: successes by seed, failures (never fed to the aggregate),
    and the aggregate over the successes (or why there is none)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    set: ParamSet
    results: dict[int, SimResult]                # seed → result, successful runs only
    failures: list[RunFailure]
    aggregate: SimResult | None = None
    aggregate_error: str | None = None

    @property
    def outputs(self) -> list[Any]:
        """The successful runs' outputs in seed order (what the aggregate was given)."""
        return [self.results[s].outputs for s in sorted(self.results)]


class StudySetsResult(BaseModel):
    """Every set of a study, in the study's order, and the aggregate across sets."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    plan: StudyPlan
    sets: list[SetResult]
    across: SimResult | None = None              # plan.aggregate_sets over the set aggregates
    across_error: str | None = None
    max_in_flight: int = 0                       # most runs submitted and not yet finished

    @property
    def runs(self) -> int:
        return sum(len(s.results) + len(s.failures) for s in self.sets)

    @property
    def failures(self) -> list[RunFailure]:
        return [f for s in self.sets for f in s.failures]

    @property
    def ok(self) -> bool:
        return (not self.failures and self.across_error is None
                and not any(s.aggregate_error for s in self.sets))

    def by_id(self, set_id: str) -> SetResult:
        for s in self.sets:
            if s.set.id == set_id:
                return s
        raise KeyError(set_id)
