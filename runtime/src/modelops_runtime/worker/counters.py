"""Counters of the warm pool and venv cache: one typed model per Dask worker process.

The worker side keeps a :class:`StatsRecorder` (thread-safe increments); snapshots are
:class:`WarmStats` models, read on a worker with ``executor.stats()`` and summed over a
cluster on the client side (``modelops_runtime.client.cluster_stats``).
"""

from __future__ import annotations

import enum
import threading

from pydantic import BaseModel, ConfigDict, Field, create_model


class RemovalReason(str, enum.Enum):
    """Why a warm process left the pool."""

    lru = "lru"                      # evicted: MAX_WARM_PROCESSES reached, another bundle needed the slot
    memory_budget = "memory_budget"  # evicted: the pool's total RSS passed POOL_MEMORY_BYTES
    reuse = "reuse"                  # retired: ran MAX_PROCESS_REUSE tasks
    ttl = "ttl"                      # retired: older than PROCESS_TTL
    mem_limit = "mem_limit"          # killed during a task: over MEM_LIMIT_BYTES
    crash = "crash"                  # died by itself (signal, os._exit), during a task or idle
    timeout = "timeout"              # killed during a task: over TASK_TIMEOUT
    unhealthy = "unhealthy"          # idle but stopped answering the checkout health check
    fresh_venv = "fresh_venv"        # FORCE_FRESH_VENV: the single-use process ended with its task
    venv_changed = "venv_changed"    # a template whose venv was rebuilt (replaced by a new one)
    shutdown = "shutdown"            # stopped because the worker process is stopping


class ReasonCounts(BaseModel):
    """Counts by reason: one int field per member of a reason enum (made by ``counts_by``,
    so a reason cannot lack its field); summed with ``+``."""

    model_config = ConfigDict(extra="forbid")  # a reason without a field must not vanish

    def __add__(self, other: "ReasonCounts") -> "ReasonCounts":
        return type(self)(**{k: getattr(self, k) + getattr(other, k)
                             for k in type(self).model_fields})

    def shown(self) -> str:
        """``reason=n`` for every reason counted, in the enum's order ("0": none)."""
        return ",".join(f"{k}={n}" for k, n in self if n) or "0"


def counts_by(reasons: type[enum.Enum], name: str, doc: str) -> type[ReasonCounts]:
    return create_model(name, __base__=ReasonCounts, __module__=__name__, __doc__=doc,
                        **{r.value: (int, 0) for r in reasons})


Removals = counts_by(RemovalReason, "Removals", "Evictions and retirements by reason.")


class FallbackReason(str, enum.Enum):
    """Why a bundle's fresh processes are exec'd instead of forked from a template."""

    import_side_effects = "import_side_effects"  # the template's own state moved while importing
    state_changed = "state_changed"  # bundle code changed what an import reads (env, cwd, sys.path)
    no_subreaper = "no_subreaper"    # the worker cannot adopt forked processes


TemplateFallbacks = counts_by(FallbackReason, "TemplateFallbacks",
                              "Bundles switched from template to exec, by reason.")


class WarmStats(BaseModel):
    """Counters since the executor started, plus the pool's current size and memory."""

    workers: int = Field(1, description="worker processes summed into this snapshot")
    tasks: int = 0
    spawns: int = 0
    reuses: int = 0
    venv_hits: int = 0
    venv_misses: int = 0
    venv_builds: int = 0
    venv_invalid: int = Field(0, description="cached venvs rebuilt because validation failed "
                              "(interpreter broken, installed distributions changed)")
    venv_build_seconds: float = 0.0
    venvs_collected: int = Field(0, description="venvs removed by cache garbage collection")
    bundles_collected: int = Field(0, description="bundles removed by cache garbage collection")
    removals: Removals = Field(default_factory=Removals)
    template_fallbacks: TemplateFallbacks = Field(
        default_factory=TemplateFallbacks,
        description="bundles whose fresh processes are exec'd instead of forked, by reason")
    template_excluded_imports: int = Field(
        0, description="modules a template left for each task process to import itself "
        "(their import does what a fork would not reproduce)")
    size: int = Field(0, description="warm processes alive now (idle + busy)")
    busy: int = 0
    rss_bytes: int = Field(0, description="resident memory (PSS where available) of all warm "
                                          "process trees now")

    def __add__(self, other: "WarmStats") -> "WarmStats":
        values = {k: getattr(self, k) + getattr(other, k) for k in WarmStats.model_fields}
        return WarmStats(**values)


_COUNTERS = ("tasks", "spawns", "reuses", "venv_hits", "venv_misses", "venv_builds",
             "venv_invalid", "venvs_collected", "bundles_collected",
             "template_excluded_imports")


class StatsRecorder:
    """Thread-safe counters shared by the pool and the venv cache of one worker process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._build_seconds = 0.0
        self._removals = dict.fromkeys((r.value for r in RemovalReason), 0)
        self._fallbacks = dict.fromkeys((r.value for r in FallbackReason), 0)

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def venv_built(self, seconds: float) -> None:
        with self._lock:
            self._counts["venv_builds"] += 1
            self._build_seconds += seconds

    def removed(self, reason: RemovalReason) -> None:
        with self._lock:
            self._removals[reason.value] += 1

    def fell_back(self, reason: FallbackReason) -> None:
        with self._lock:
            self._fallbacks[reason.value] += 1

    def snapshot(self, *, size: int = 0, busy: int = 0, rss_bytes: int = 0) -> WarmStats:
        with self._lock:
            return WarmStats(**self._counts, venv_build_seconds=round(self._build_seconds, 3),
                             removals=Removals(**self._removals),
                             template_fallbacks=TemplateFallbacks(**self._fallbacks),
                             size=size, busy=busy,
                             rss_bytes=rss_bytes)
