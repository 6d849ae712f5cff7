"""Typed contracts that travel between client and workers: SimTask, SimResult, Call."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# fullmatch, never match with `$`: `$` also matches before a trailing newline
BUNDLE_REF = re.compile(r"sha256:[0-9a-f]{64}")
ENTRYPOINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

Scalar = str | int | float | bool | None


def check_bundle_ref(ref: str) -> str:
    if not BUNDLE_REF.fullmatch(ref):
        raise ValueError(
            f"bundle reference {ref!r} is not of the form 'sha256:<64 lowercase hex>'; "
            "use the reference printed by `modelops-runtime bundle pack`"
        )
    return ref


def check_entrypoint(ep: str) -> str:
    if not ENTRYPOINT.fullmatch(ep):
        raise ValueError(
            f"entrypoint {ep!r} is not of the form 'module:function' (e.g. 'model.sir:simulate')"
        )
    return ep


BundleRef = Annotated[str, AfterValidator(check_bundle_ref)]
Entrypoint = Annotated[str, AfterValidator(check_entrypoint)]


class SimTask(BaseModel):
    """One seeded run of a model: ``function(params, seed)`` from a bundle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bundle: BundleRef
    entrypoint: Entrypoint
    params: dict[str, Scalar] = Field(default_factory=dict)
    seed: int


    def digest(self) -> str:
        """Stable content hash: the same task always gets the same digest."""
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class Call(BaseModel):
    """What an executor runs: ``entrypoint(*args)`` from a bundle.

    A simulation is ``Call(args=(params, seed))``, an aggregation is
    ``Call(args=(list_of_outputs,))``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    bundle: str
    entrypoint: str
    args: tuple[Any, ...]
    kind: str = "simulation"  # or "aggregation"

    @classmethod
    def for_sim(cls, task: SimTask) -> "Call":
        return cls(bundle=task.bundle, entrypoint=task.entrypoint,
                   args=(dict(task.params), task.seed))


class SimResult(BaseModel):
    """A simulation's (or aggregation's) outputs plus how it was executed."""

    model_config = ConfigDict(frozen=True)

    outputs: Any
    executor: str                 # "direct" or "isolated_warm"
    pid: int                      # process the entrypoint ran in
    process_task_count: int       # tasks that process has run, this one included
    venv_cache_hit: bool | None   # None for direct (no venv)
    duration_s: float
    worker: str = ""              # Dask worker address, filled in on the worker
    env_digest: str = ""          # package set the code ran with (executor.package_sets())
