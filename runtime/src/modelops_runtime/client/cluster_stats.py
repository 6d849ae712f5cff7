"""Executor figures of a whole cluster, read from a client: every worker process's
figures through the scheduler (``client.run``) and their sum.

One reading and summing path for both users: ``cluster_stats(client)`` for a connected
client (the study report), ``read_cluster(address)`` connecting itself
(``modelops-runtime stats``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from ..errors import ModelOpsError
from ..worker.hooks.metrics import WorkerFigures, worker_figures
from ..worker.counters import Removals, WarmStats


class ClusterStats(BaseModel):
    """``total`` summed over ``workers`` (worker address → that process's stats)."""

    total: WarmStats
    workers: dict[str, WarmStats]


def cluster_stats(client) -> ClusterStats:
    """Stats of every worker process of the cluster ``client`` is connected to, and their
    sum: the same reading and summing as ``modelops-runtime stats``. Workers without a
    modelops runtime are left out; a ``direct`` worker adds the one figure it counts
    (tasks)."""
    cluster = summarize("", _rows(client.run(worker_figures, on_error="return"), {}))
    return ClusterStats(total=cluster.total,
                        workers={r.address: r.figures.stats for r in cluster.workers
                                 if r.figures.executor is not None})


class StatsError(ModelOpsError):
    """The cluster's figures could not be read. Fields: scheduler."""


class WorkerRow(BaseModel):
    address: str
    name: str
    figures: WorkerFigures


class ClusterFigures(BaseModel):
    """Every worker process's figures (sorted by name, then address) and their sum."""

    scheduler: str
    workers: list[WorkerRow]
    total: WarmStats
    total_reported: list[str]


# -- reading ---------------------------------------------------------------------------

async def _read(address: str, timeout: float) -> ClusterFigures:
    from distributed import Client

    async with Client(address, timeout=timeout, asynchronous=True,
                      set_as_default=False) as client:
        identity = await client.scheduler.identity(n_workers=-1)
        names = {addr: str(info.get("name", addr))
                 for addr, info in identity.get("workers", {}).items()}
        raw = await client.run(worker_figures, on_error="return") if names else {}
    return summarize(address, _rows(raw, names))


def _rows(raw: dict[str, Any], names: dict[str, str]) -> list[WorkerRow]:
    """One row per worker from ``client.run(worker_figures)``, sorted by name, address."""
    rows = []
    for addr, value in raw.items():
        if isinstance(value, BaseException):  # the worker answered with an error
            figures = WorkerFigures(executor=None, pid=0,
                                    error=f"{type(value).__name__}: {value}")
        else:
            figures = WorkerFigures.model_validate(value)
        rows.append(WorkerRow(address=addr, name=names.get(addr, addr), figures=figures))
    rows.sort(key=lambda r: (r.name, r.address))
    return rows


def summarize(scheduler: str, rows: list[WorkerRow]) -> ClusterFigures:
    """Sum every figure over the workers that report it."""
    total: dict[str, Any] = {"workers": 0, "removals": Removals()}
    reported: list[str] = []
    for row in rows:
        fig = row.figures
        if fig.executor is None:
            continue
        total["workers"] += 1
        for field in fig.reported:
            if field not in reported:
                reported.append(field)
            value = getattr(fig.stats, field)
            total[field] = total[field] + value if field in total else value
    return ClusterFigures(scheduler=scheduler, workers=rows,
                          total=WarmStats.model_validate(total), total_reported=reported)


def read_cluster(address: str, timeout: float = 10) -> ClusterFigures:
    """Connect to the scheduler at ``address`` and read every worker's figures."""
    try:
        return asyncio.run(_read(address, timeout))
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise StatsError(
            f"cannot read the cluster's figures from the Dask scheduler at {address!r}: "
            f"{exc}. Give the scheduler's address as tcp://HOST:PORT (the chart's scheduler "
            "Service listens on 8786; from outside Kubernetes run the `kubectl port-forward` "
            "line that `helm status <release>` prints and use tcp://127.0.0.1:8786), or raise "
            "--timeout if the scheduler is slow to answer.", scheduler=address) from None
