"""`modelops-runtime stats --scheduler ADDR`: the executor figures of every worker process.

The same figures as the ``modelops_*`` series on each worker's /metrics, read through the
scheduler (``client.run``), so one reachable scheduler port is enough: a local cluster, or
a cluster in Kubernetes behind the ``kubectl port-forward`` the chart's NOTES print.
"""

from __future__ import annotations

import json
import sys

from ..client.cluster_stats import ClusterFigures, StatsError, read_cluster
from ..worker.counters import WarmStats
from .options import add_json


# -- rendering -------------------------------------------------------------------------

COLUMNS = ["worker", "address", "pid", "executor", "tasks", "spawns", "reuses", "venv hits",
           "venv misses", "venv builds", "build s", "removals", "template fallbacks", "procs", "busy",
           "pool RSS"]
_RIGHT = {"pid", "tasks", "spawns", "reuses", "venv hits", "venv misses", "venv builds",
          "build s", "procs", "busy", "pool RSS"}


def _cells(stats: WarmStats, reported: list[str]) -> list[str]:
    def show(field: str, text: str) -> str:
        return text if field in reported else "-"

    return [
        show("tasks", str(stats.tasks)),
        show("spawns", str(stats.spawns)),
        show("reuses", str(stats.reuses)),
        show("venv_hits", str(stats.venv_hits)),
        show("venv_misses", str(stats.venv_misses)),
        show("venv_builds", str(stats.venv_builds)),
        show("venv_build_seconds", f"{stats.venv_build_seconds:.1f}"),
        show("removals", stats.removals.shown()),
        show("template_fallbacks", stats.template_fallbacks.shown()),
        show("size", str(stats.size)),
        show("busy", str(stats.busy)),
        show("rss_bytes", f"{stats.rss_bytes / 2**20:.0f} MiB"),
    ]


def format_table(cluster: ClusterFigures) -> str:
    """One row per worker process, a total row, and notes on rows that lack figures."""
    body: list[list[str]] = []
    notes: list[str] = []
    for row in cluster.workers:
        fig = row.figures
        if fig.executor is None:
            body.append([row.name, row.address, str(fig.pid or "-"),
                         "error" if fig.error else "none", *["-"] * (len(COLUMNS) - 4)])
            notes.append(
                f"{row.address}: cannot read its figures ({fig.error})" if fig.error else
                f"{row.address}: no modelops runtime in this worker process; start workers "
                "with `dask worker ... --preload modelops_runtime.preload` (the chart does this)")
            continue
        body.append([row.name, row.address, str(fig.pid), fig.executor,
                     *_cells(fig.stats, fig.reported)])
        if fig.error:
            notes.append(f"{row.address}: cannot read its figures ({fig.error})")
    executors = sorted({r.figures.executor for r in cluster.workers if r.figures.executor})
    body.append([f"total ({cluster.total.workers} of {len(cluster.workers)})", "", "",
                 ",".join(executors) or "-", *_cells(cluster.total, cluster.total_reported)])
    if "direct" in executors:
        notes.append("executor=direct counts tasks only: it has no warm processes and no "
                     "venvs ('-')")
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if COLUMNS[i] in _RIGHT else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"scheduler {cluster.scheduler}: {len(cluster.workers)} worker process(es)",
           line([c.upper() for c in COLUMNS]), *map(line, body[:-1]),
           line(["-" * w for w in widths]), line(body[-1])]
    out += [f"note: {n}" for n in notes]
    return "\n".join(out)


# -- command ---------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser(
        "stats", help="per-worker table of the warm pool and venv cache figures",
        description="Read the executor figures of every Dask worker process (tasks, warm "
                    "process spawns and reuses, venv cache hits/misses/builds and build "
                    "time, evictions and retirements by reason, bundles whose fresh "
                    "processes are exec'd instead of forked from a template, by reason, pool "
                    "size and memory) "
                    "through the scheduler and print one row per worker process plus a "
                    "total. The same figures are the modelops_* series on each worker's "
                    "/metrics.")
    p.add_argument("--scheduler", required=True, metavar="ADDR",
                   help="scheduler address, e.g. tcp://127.0.0.1:8786 (port-forwarded "
                        "from the chart's scheduler Service)")
    p.add_argument("--timeout", type=float, default=10, metavar="S",
                   help="seconds to wait for the scheduler (default 10)")
    add_json(p, "the figures")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.timeout <= 0:
        print("error: --timeout must be > 0 seconds", file=sys.stderr)
        return 2
    try:
        cluster = read_cluster(args.scheduler, args.timeout)
    except StatsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not cluster.workers:
        print(f"error: no worker processes are connected to the scheduler at "
              f"{args.scheduler}; start workers (or wait for them) and retry",
              file=sys.stderr)
        return 1
    print(json.dumps(cluster.model_dump(mode="json"), indent=1) if args.json
          else format_table(cluster))
    return 0
