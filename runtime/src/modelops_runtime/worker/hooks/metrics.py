"""The executor's figures as ``modelops_*`` Prometheus series on the Dask worker's /metrics.

A Dask worker's HTTP server (``--dashboard-address``) serves prometheus_client's global
REGISTRY at ``/metrics``. :func:`install` registers one collector per worker process there
(idempotent) that reads the running executor's ``stats()`` at scrape time. Every series
carries the executor type (``executor``) and the Dask worker's name (``worker``) as labels;
an executor that counts less (``direct``: tasks only) exports only what it counts.

Pod-wide: ``dask worker --nworkers P`` gives all P processes one ``--dashboard-address``,
so only the first binds the pod's declared port (8788) and the others get free ports that
nobody scrapes (see chart/README.md). So every process also publishes its figures every
few seconds to a file in a directory shared with its siblings — the processes started by
the same ``dask worker`` command, i.e. with the same parent — and each /metrics serves its
own figures live plus its live siblings' latest files. Scraping one port shows the pod.

:func:`local_figures` is the same snapshot as a typed model; ``modelops-runtime stats``
collects it from every worker process with ``client.run(worker_figures)``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import REGISTRY
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    InfoMetricFamily, Metric)
from prometheus_client.registry import Collector, CollectorRegistry
from pydantic import BaseModel, Field, ValidationError

from ... import __version__
from ...errors import ConfigError
from ..counters import FallbackReason, RemovalReason, WarmStats

log = logging.getLogger("modelops_runtime.metrics")

PREFIX = "modelops"
PUBLISH_PERIOD = 5.0   # s between a process's writes of its figures for its siblings
STALE_AFTER = 60.0     # s after which a sibling's file is ignored (its publisher stopped)

# WarmStats field → (series name without _total, help) for the cumulative counters
COUNTERS: dict[str, tuple[str, str]] = {
    "tasks": ("tasks", "Tasks (simulations and aggregations) run by the executor"),
    "spawns": ("process_spawns", "Warm processes started"),
    "reuses": ("process_reuses", "Tasks served by an already running warm process"),
    "venv_hits": ("venv_cache_hits", "Venv lookups served from the venv cache"),
    "venv_misses": ("venv_cache_misses", "Venv lookups that needed a build"),
    "venv_builds": ("venv_builds", "Venvs built (uv)"),
    "venv_invalid": ("venv_invalid", "Cached venvs rebuilt because validation failed "
                     "(interpreter broken, installed distributions changed)"),
    "venv_build_seconds": ("venv_build_seconds", "Seconds spent building venvs"),
    "venvs_collected": ("venvs_collected", "Venvs removed by cache garbage collection"),
    "bundles_collected": ("bundles_collected", "Bundles removed by cache garbage collection"),
    "template_excluded_imports": ("template_excluded_imports",
                                  "Modules a template left for each task process to import "
                                  "itself (their import does what a fork would not reproduce)"),
}


class WorkerFigures(BaseModel):
    """One Dask worker process's executor figures at one moment.

    ``reported`` names the :class:`WarmStats` fields the executor actually counts; the
    others hold defaults and are shown as absent (``direct`` reports ``tasks`` only)."""

    executor: str | None = Field(description="executor type; None: no modelops runtime here")
    pid: int
    worker: str = Field("", description="the Dask worker's name (its address if unnamed)")
    version: str = __version__
    settings: dict[str, str] = Field(default_factory=dict,
                                     description="mode settings worth a label")
    stats: WarmStats = Field(default_factory=WarmStats)
    reported: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="why the figures could not be read")

    def has(self, field: str) -> bool:
        return field in self.reported


_SETTINGS = ("max_warm_processes", "max_process_reuse", "process_ttl", "force_fresh_venv",
             "validate_deps")


def local_figures(worker: str = "") -> WorkerFigures:
    """The figures of this process's executor (built by the ``modelops`` plugin)."""
    from ...errors import ModelOpsError
    from .runtime import current_config, current_executor

    worker = worker or _worker_name or str(os.getpid())
    try:
        executor = current_executor()
        config = current_config()
    except ModelOpsError:
        return WorkerFigures(executor=None, pid=os.getpid(), worker=worker)
    settings = {k: str(getattr(config, k)).lower() if isinstance(getattr(config, k), bool)
                else str(getattr(config, k)) for k in _SETTINGS}
    figures = WorkerFigures(executor=executor.name, pid=os.getpid(), worker=worker,
                            settings=settings)
    try:
        raw: dict[str, Any] = dict(executor.stats() or {})
    except Exception as exc:  # noqa: BLE001 - a scrape must never take the worker down
        log.warning("reading executor stats for /metrics failed: %s: %s",
                    type(exc).__name__, exc)
        return figures.model_copy(update={"error": f"{type(exc).__name__}: {exc}"})
    known = [k for k in raw if k in WarmStats.model_fields and k != "workers"]
    return figures.model_copy(update={
        "stats": WarmStats.model_validate({k: raw[k] for k in known}), "reported": known})


def worker_figures(dask_worker=None) -> dict[str, Any]:
    """Run on every worker by ``client.run``; plain data so any client version can read it."""
    name = _name_of(dask_worker) if dask_worker is not None else ""
    return local_figures(name).model_dump(mode="json")


# -- Prometheus series -----------------------------------------------------------------

def metric_families(processes: Iterable[WorkerFigures]) -> Iterator[Metric]:
    """The ``modelops_*`` series of a set of worker processes (one sample set each)."""
    procs = [f for f in processes if f.executor is not None]
    if not procs:
        return
    base = ["executor", "worker"]
    info = InfoMetricFamily(f"{PREFIX}_executor",
                            "The executor of a Dask worker process and its mode settings",
                            labels=base)
    counters = {field: CounterMetricFamily(f"{PREFIX}_{name}", text, labels=base)
                for field, (name, text) in COUNTERS.items()}
    removals = CounterMetricFamily(f"{PREFIX}_process_removals",
                                   "Warm processes evicted or retired, by reason",
                                   labels=[*base, "reason"])
    fallbacks = CounterMetricFamily(f"{PREFIX}_template_fallbacks",
                                    "Bundles whose fresh processes are exec'd instead of "
                                    "forked from a template, by reason",
                                    labels=[*base, "reason"])
    warm = GaugeMetricFamily(f"{PREFIX}_warm_processes", "Warm processes alive now",
                             labels=[*base, "state"])
    rss = GaugeMetricFamily(f"{PREFIX}_warm_rss_bytes",
                            "Resident memory (PSS where available) of all warm process "
                            "trees now", labels=base)
    for fig in procs:
        labels = [fig.executor, fig.worker]
        info.add_metric(labels, {"version": fig.version, **fig.settings})
        stats = fig.stats
        for field, family in counters.items():
            if fig.has(field):
                family.add_metric(labels, getattr(stats, field))
        if fig.has("removals"):
            for reason in RemovalReason:
                removals.add_metric([*labels, reason.value],
                                    getattr(stats.removals, reason.value))
        if fig.has("template_fallbacks"):
            for why in FallbackReason:
                fallbacks.add_metric([*labels, why.value],
                                     getattr(stats.template_fallbacks, why.value))
        if fig.has("size"):
            busy = stats.busy if fig.has("busy") else 0
            warm.add_metric([*labels, "busy"], busy)
            warm.add_metric([*labels, "idle"], max(0, stats.size - busy))
        if fig.has("rss_bytes"):
            rss.add_metric(labels, stats.rss_bytes)
    for family in (info, *counters.values(), removals, fallbacks, warm, rss):
        if family.samples:  # a series nobody reports is absent, not zero
            yield family


# -- sharing figures with the sibling processes of the same `dask worker` command --------

def pod_dir(parent: int | None = None) -> Path:
    """Where the processes of one ``dask worker`` command (one parent) publish."""
    parent = os.getppid() if parent is None else parent
    return Path(tempfile.gettempdir()) / "modelops-metrics" / str(parent)


def private_dir(directory: Path) -> Path:
    """``directory`` and its parent, created 0700 if missing, checked to be real
    directories of this uid that nobody else can write: another user's (or a planted
    symlink) is refused with ConfigError instead of being written into."""
    for path in (directory.parent, directory):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
        st = os.lstat(path)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & 0o022):
            raise ConfigError(
                f"metrics directory {path} is not a private directory of uid {os.geteuid()} "
                f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}); the worker does not "
                "write its figures there. Remove it, or give the worker its own TMPDIR",
                variable="TMPDIR", value=str(path.parent), allowed="a private directory")
    return directory


def publish(figures: WorkerFigures, directory: Path) -> None:
    """Write this process's figures atomically (readers never see half a file), through
    a temporary file of an unpredictable name in a checked private directory."""
    private_dir(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{figures.pid}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(figures.model_dump_json())
        os.replace(tmp, directory / f"{figures.pid}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def siblings(directory: Path, own_pid: int) -> list[WorkerFigures]:
    """The latest figures of the other live processes publishing in ``directory``; files
    of processes that are gone are removed, stale ones ignored."""
    out = []
    now = time.time()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        pid = int(path.stem) if path.stem.isdigit() else None
        if pid is None or pid == own_pid:
            continue
        if not psutil.pid_exists(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        try:
            if now - path.stat().st_mtime > STALE_AFTER:
                continue
            out.append(WorkerFigures.model_validate_json(path.read_text()))
        except (OSError, ValueError, ValidationError):
            continue  # replaced or removed while reading: next scrape gets it
    return out


class ModelOpsCollector(Collector):
    """This process's figures, read live at every scrape, plus its siblings' latest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        own = local_figures()
        yield from metric_families([own, *siblings(self.directory, own.pid)])

    def describe(self) -> list[Metric]:
        # no executor reads at registration time (prometheus_client calls describe())
        return []


def _publish_loop(directory: Path, stop: threading.Event) -> None:
    path = directory / f"{os.getpid()}.json"
    warned = False
    while True:
        try:
            figures = local_figures()
            if figures.executor is None:  # runtime shut down: siblings stop showing us
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                publish(figures, directory)
        except ConfigError as exc:  # an unsafe directory: say so once, keep serving
            if not warned:
                log.warning("%s", exc)
                warned = True
        except Exception as exc:  # noqa: BLE001 - observability must not kill the worker
            log.debug("publishing figures to %s failed: %s", directory, exc)
        if stop.wait(PUBLISH_PERIOD):
            return


def _withdraw(directory: Path) -> None:
    """At exit: remove this process's file, and the directory once the last one left."""
    with contextlib.suppress(OSError):
        (directory / f"{os.getpid()}.json").unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()  # only succeeds when empty


def _remove_orphaned_dirs(root: Path) -> None:
    """Directories of `dask worker` commands that are gone (their processes were killed)."""
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.name.isdigit() and not psutil.pid_exists(int(entry.name)):
            for f in entry.iterdir():
                with contextlib.suppress(OSError):
                    f.unlink()
            with contextlib.suppress(OSError):
                entry.rmdir()


def _name_of(worker) -> str:
    name = getattr(worker, "name", None)
    return str(name) if name not in (None, "") else str(getattr(worker, "address", ""))


_lock = threading.Lock()
_installed: dict[int, ModelOpsCollector] = {}
_worker_name = ""
_stop_publishing = threading.Event()


def install(worker=None, registry: CollectorRegistry = REGISTRY) -> ModelOpsCollector:
    """Register the collector on ``registry`` and start publishing this process's figures
    for its siblings; once per process (later calls are no-ops).

    Called by the ``modelops`` WorkerPlugin's setup with the Dask worker; Dask's worker
    /metrics serves the global REGISTRY, so nothing else is needed to expose the series."""
    global _worker_name
    with _lock:
        if worker is not None and not _worker_name:
            _worker_name = _name_of(worker)
        collector = _installed.get(id(registry))
        if collector is None:
            collector = ModelOpsCollector(pod_dir())
            registry.register(collector)
            if not _installed:
                with contextlib.suppress(OSError):
                    _remove_orphaned_dirs(collector.directory.parent)
                atexit.register(_withdraw, collector.directory)
                threading.Thread(target=_publish_loop, args=(collector.directory,
                                                              _stop_publishing),
                                 daemon=True, name="modelops-metrics-publisher").start()
            _installed[id(registry)] = collector
        return collector
