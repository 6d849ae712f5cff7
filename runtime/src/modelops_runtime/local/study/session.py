"""``modelops-runtime local up | run | status | down``: a local cluster that stays up between
studies, so a modeller's edit-run loop pays the cluster's start once.

- covers: each action's checks, what it prints and its exit code; ``run`` runs a study on
  the cluster ``up`` started (the same report as ``local --study``).
- does not: supervise processes (local/cluster/background.py) or keep the record
  (local/cluster/state.py).
- see also: docs/modes.md "A cluster that stays up".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...errors import LocalModeError
from ...exitcodes import EXIT_FAILED, EXIT_OK
from ..cluster import background
from ..cluster.launch import LaunchPlan, plan
from ..cluster.render import find_chart, render_cluster
from ..cluster.state import ClusterState, clear_stale, is_held, read_state
from ..console import echo
from .run import Study, check_direct_dependencies, run_and_report

ACTIONS = ("up", "run", "status", "down")
# the flags each action takes besides --state-dir (the rest are refused, not ignored)
TAKES = {
    "up": {"values", "set", "chart", "release", "start_timeout"},
    "run": {"study", "sims", "results", "compare", "batch", "batch_seconds", "no_progress",
            "results_store", "retry_failed"},
    "status": set(),
    "down": set(),
}


def state_dir_of(args: argparse.Namespace) -> Path:
    """``--state-dir``, else the default of ``local`` (.state/local next to the chart)."""
    if args.state_dir:
        return Path(args.state_dir).resolve()
    chart = args.chart or find_chart()
    return (Path(chart).resolve().parent / ".state" / "local").resolve()


def current(state: Path) -> ClusterState | None:
    """The cluster kept up in ``state``; a stale record (its supervisor gone: crashed,
    killed, rebooted) is cleared first, with one line saying so."""
    if is_held(state):
        return read_state(state)
    stale = clear_stale(state)
    if stale is not None:
        echo(f"notice: removed a stale local cluster record in {state} (its supervisor, pid "
             f"{stale.supervisor_pid}, is gone; killed what was left of it)")
    return None


def announce(args: argparse.Namespace, chart, launch: LaunchPlan) -> None:
    """What is about to start: the helm command the values render with, the mode, the
    workers and the plan's notices (``local`` and ``local up``)."""
    echo(f"local mode: helm template {args.release} {chart} "
         + (" ".join(f"-f {v}" for v in args.values) or "(chart defaults)")
         + "".join(f" --set {s}" for s in args.set))
    echo(f"mode: {launch.config.summary()}")
    echo(f"workers: {launch.describe()}")
    for notice in launch.notices:
        echo(f"notice: {notice}")


def _none_up(state: Path) -> int:
    print(f"error: no local cluster is up in {state}; start one with `modelops-runtime local "
          f"up -f VALUES` (with the same --state-dir)", file=sys.stderr)
    return EXIT_FAILED


def up(args: argparse.Namespace, state: Path) -> int:
    t0 = time.perf_counter()
    running = current(state)
    if running is not None:
        print(f"error: a local cluster is already up in {state} ({running.address or 'starting'}"
              f", values {' '.join(running.values) or '(chart defaults)'}); use it (`local run "
              "--study DIR`) or stop it first (`local down`)", file=sys.stderr)
        return EXIT_FAILED
    chart = args.chart or find_chart()
    rendered = render_cluster(args.values, args.set, chart=chart, release=args.release)
    launch = plan(rendered, state, release=args.release)
    values = [str(v) for v in args.values]
    announce(args, chart, launch)
    got = background.start(launch, start_timeout=args.start_timeout, values=values,
                           sets=list(args.set), echo=echo)
    where = "" if args.state_dir is None else f" --state-dir {state}"
    echo(f"cluster is up in the background: scheduler {got.address}  dashboard "
         f"{got.dashboard} (started in {time.perf_counter() - t0:.1f} s)")
    echo(f"  run a study:  modelops-runtime local run{where} --study DIR [--sims N]")
    echo(f"  from Python:  Client({got.address!r}); bundles go to {launch.bundle_repo}")
    echo(f"  status/stop:  modelops-runtime local status{where} | modelops-runtime local "
         f"down{where}")
    echo(f"  logs: {launch.run_dir / 'logs'}")
    return EXIT_OK


def status(args: argparse.Namespace, state: Path) -> int:
    got = current(state)
    if got is None:
        echo(f"no local cluster is up in {state}")
        return EXIT_FAILED
    if got.status != "up":
        echo(f"a local cluster is starting in {state} (supervisor pid {got.supervisor_pid}; "
             f"log {got.log})")
        return EXIT_OK
    launch = LaunchPlan.model_validate_json(got.launch_file.read_text())
    from distributed import Client

    with Client(got.address, timeout=30, set_as_default=False) as client:
        connected = len(client.scheduler_info(n_workers=-1)["workers"])
    echo(f"up since {time.strftime('%H:%M:%S', time.localtime(got.started))} "
         f"({time.time() - got.started:.0f} s): scheduler {got.address}  dashboard "
         f"{got.dashboard}")
    echo(f"values: {' '.join(got.values) or '(chart defaults)'}"
         + "".join(f" --set {s}" for s in got.sets))
    echo(f"mode: {launch.config.summary()}")
    echo(f"workers: {connected} of {launch.expected_workers} Dask worker processes connected "
         f"({launch.describe()})")
    echo(f"supervisor pid {got.supervisor_pid}; logs: {got.run_dir / 'logs'}")
    return EXIT_OK


def down(args: argparse.Namespace, state: Path) -> int:
    got = current(state)
    if got is None:
        echo(f"no local cluster is up in {state}: nothing to stop")
        return EXIT_OK
    echo(f"stopping the local cluster {got.address or '(starting)'} ...")
    if not background.stop(state, got):
        echo("notice: its supervisor did not stop in time: killed it and what it left")
    echo("stopped; every local process is gone")
    return EXIT_OK


def run(args: argparse.Namespace, state: Path, study: Study, results: list[Path],
        baseline) -> int:
    got = current(state)
    if got is None:
        return _none_up(state)
    if got.status != "up":
        raise LocalModeError(f"the local cluster in {state} is still starting; run again "
                             "once `local status` says it is up")
    launch = LaunchPlan.model_validate_json(got.launch_file.read_text())
    if launch.expected_workers == 0:
        raise LocalModeError("the cluster kept up has no workers (worker.replicas is 0)")
    check_direct_dependencies(study, launch)
    from distributed import Client

    echo(f"local cluster: {got.address} (up since "
         f"{time.strftime('%H:%M:%S', time.localtime(got.started))}; mode: "
         f"{launch.config.summary()})")
    with Client(got.address, timeout=60) as client:
        return run_and_report(
            client, study, launch, echo, sims=args.sims, progress=not args.no_progress,
            results=results, values=got.values, sets=got.sets, baseline=baseline,
            batch=args.batch, batch_target=args.batch_seconds,
            results_store=args.results_store, retry_failed=args.retry_failed)
