"""``modelops-runtime local``: render the chart, plan, start the local cluster, run the
study (or keep the cluster up), stop everything. The argument parser is cli/local.py."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...exitcodes import EXIT_DIFFERS, EXIT_FAILED, EXIT_INPUTS_DIFFER, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE
from ...errors import LocalModeError, ModelOpsError, SchedulerLost
from ..compare.runs import InputsDiffer, inputs_difference, load_baseline
from ..cluster.launch import plan
from ..console import echo
from ..cluster.render import find_chart, render_cluster
from .run import (Study, check_direct_dependencies,
                    run_and_report)
from ..cluster.stopping import sigterm_as_interrupt, stopped
from ..cluster.supervise import LocalCluster
from . import session
from .preflight import check_study_entrypoints
from .stored import check_store
from .table import check_table_target
from ...client.store import StoreInputsDiffer



EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every sim and the aggregation ran (with --compare: every (set, seed) run as before)
  {EXIT_FAILED}    a sim or the aggregation failed, or an error stopped the run (see stderr)
  {EXIT_USAGE}    bad command line, or --compare FILE or --results-store URL records other
       inputs (bundle, entrypoint, params, seeds) than this study: one line names the
       difference
  {EXIT_DIFFERS}    --compare: a (set, seed) run's outputs differ, it failed in only one of the
       two or with another error type, or it is in only one of the two (wins over {EXIT_FAILED})
  {EXIT_INTERRUPTED}  Ctrl-C, {EXIT_TERMINATED} SIGTERM: the local cluster was stopped, no process is left"""


def check_results_targets(paths) -> list[Path]:
    """``--results`` files: a table (.parquet, .csv) or else JSON; checked before anything
    runs (Parquet needs pyarrow)."""
    out = [paths] if isinstance(paths, Path) else list(paths or ())
    for path in out:
        try:
            check_table_target(path)
        except ValueError as exc:
            raise LocalModeError(str(exc)) from None
    return out


def exit_for(exc: ModelOpsError) -> int:
    """One ``error:`` line on stderr; the exit code of the error's kind (inputs that differ
    from --compare's or the results store's, or anything else that stopped the run)."""
    print(f"error: {exc}", file=sys.stderr)
    return (EXIT_INPUTS_DIFFER if isinstance(exc, (InputsDiffer, StoreInputsDiffer))
            else EXIT_FAILED)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) is not None:
        return main_action(args)
    if args.sims is not None and args.sims < 1:
        print("error: --sims must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if not args.study and not args.keep:
        print("error: nothing to do: give --study PATH (run it, then stop) and/or --keep "
              "(keep the cluster up until Ctrl-C)", file=sys.stderr)
        return EXIT_USAGE
    restore = sigterm_as_interrupt()
    t0 = time.perf_counter()
    try:
        study = Study.load(args.study) if args.study else None
        if study is not None:
            check_study_entrypoints(study)
        results = check_results_targets(args.results)
        baseline = load_baseline(args.compare) if args.compare else None
        if args.results_store:
            if study is None:
                raise LocalModeError("--results-store needs --study: it keeps a study's runs")
            check_store(args.results_store, study, args.sims)
        if study is not None and baseline is not None and baseline.inputs is not None:
            # everything but the bundle digest (known once packed) before anything starts
            planned = study.inputs(baseline.inputs.bundle, args.sims)
            problem = inputs_difference(baseline.inputs, planned, baseline.label, "this study")
            if problem:
                raise InputsDiffer(f"not comparable: {problem}; compare runs of the same "
                                   "study")
        chart = args.chart or find_chart()
        state = args.state_dir or (Path(chart).resolve().parent / ".state" / "local")
        rendered = render_cluster(args.values, args.set, chart=chart, release=args.release)
        launch = plan(rendered, state, release=args.release)
        if study is not None:
            if launch.expected_workers == 0:
                raise LocalModeError(
                    "worker.replicas is 0 in these values: no worker would run the study; "
                    "set worker.replicas >= 1 (e.g. --set worker.replicas=1)")
            check_direct_dependencies(study, launch)
        session.announce(args, chart, launch)
        with LocalCluster(launch, echo, start_timeout=args.start_timeout) as cluster:
            client = cluster.client()
            echo(f"scheduler: {cluster.address}  dashboard: {client.dashboard_link}")
            echo(f"logs: {launch.run_dir / 'logs'}")
            code = 0
            if study is not None:
                try:
                    code = run_and_report(
                        client, study, launch, echo, sims=args.sims,
                        progress=not args.no_progress, results=results, values=args.values,
                        sets=args.set, baseline=baseline, batch=args.batch,
                        batch_target=args.batch_seconds, results_store=args.results_store,
                        retry_failed=args.retry_failed)
                except SchedulerLost as exc:  # one line, with the log to read
                    raise SchedulerLost(f"{exc.message} Its log: {launch.scheduler.log}",
                                        **exc.fields) from None
            if args.keep:
                echo(f"cluster is up: Client({cluster.address!r}) or --scheduler-file "
                     f"{launch.scheduler_file}; workers fetch bundles from "
                     f"{launch.bundle_repo} (`modelops-runtime bundle pack DIR --repo "
                     f"{launch.bundle_repo}`); press Ctrl-C to stop it")
                while True:
                    cluster.check_running()
                    time.sleep(0.5)
            echo("stopping the local cluster ...")
        echo(f"stopped; every local process is gone. total time {time.perf_counter() - t0:.1f} s")
        return code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        return stopped(exc, "the local cluster")
    except ModelOpsError as exc:
        return exit_for(exc)
    finally:
        restore()


# what a flag given to the wrong action is about (the error names where it belongs)
_BELONGS = {"values": "local up", "set": "local up", "chart": "local up",
            "release": "local up", "start_timeout": "local up", "study": "local run",
            "sims": "local run", "results": "local run", "compare": "local run",
            "batch": "local run", "batch_seconds": "local run", "no_progress": "local run",
             "results_store": "local run", "retry_failed": "local run",
            "keep": "`local -f VALUES --keep` (a cluster in the foreground)"}


def main_action(args: argparse.Namespace) -> int:
    """``local up | run | status | down`` (session.py): one cluster kept up per state dir."""
    action = args.action
    defaults = args.local_defaults
    wrong = [k for k in _BELONGS if k not in session.TAKES[action]
             and getattr(args, k) != defaults[k]]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        print(f"error: `local {action}` does not take {flags}: "
              f"{', '.join(sorted({_BELONGS[k] for k in wrong}))} does", file=sys.stderr)
        return EXIT_USAGE
    if action == "run" and not args.study:
        print("error: `local run` needs --study PATH (the study to run on the cluster kept "
              "up)", file=sys.stderr)
        return EXIT_USAGE
    if args.sims is not None and args.sims < 1:
        print("error: --sims must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    restore = sigterm_as_interrupt()
    try:
        state = session.state_dir_of(args)
        if action == "run":
            study = Study.load(args.study)
            check_study_entrypoints(study)
            results = check_results_targets(args.results)
            baseline = load_baseline(args.compare) if args.compare else None
            if args.results_store:
                check_store(args.results_store, study, args.sims)
            if baseline is not None and baseline.inputs is not None:
                planned = study.inputs(baseline.inputs.bundle, args.sims)
                problem = inputs_difference(baseline.inputs, planned, baseline.label,
                                            "this study")
                if problem:
                    raise InputsDiffer(f"not comparable: {problem}; compare runs of the same "
                                       "study")
            return session.run(args, state, study, results, baseline)
        return {"up": session.up, "status": session.status, "down": session.down}[action](
            args, state)
    except KeyboardInterrupt as exc:
        if action == "up":
            return stopped(exc, "the local cluster")
        return stopped(exc, f"`local {action}` (a cluster kept up stays up)")
    except ModelOpsError as exc:
        return exit_for(exc)
    finally:
        restore()
