"""`modelops-runtime local`: the chart's scheduler and workers as local processes (the
command line; the work is modelops_runtime.local.study.command)."""

from __future__ import annotations

from pathlib import Path

from ..exitcodes import EXIT_DIFFERS
from ..local.study.command import EXIT_CODES, main
from ..local.study.session import ACTIONS
from .options import (add_batching, add_command, add_local_cluster, add_results_store,
                      add_study, add_values)


def register(sub) -> None:
    p = add_command(
        sub, "local", exit_codes=EXIT_CODES,
        help="run the chart's scheduler and workers as local processes",
        description=(
            "Render chart/ with helm from the given values files and start its "
            "scheduler and worker containers (command, args, env) as local "
            "processes on 127.0.0.1: the same configuration the pods get. Then run "
            "a study (--study) and stop, or keep the cluster up (--keep) until "
            "Ctrl-C. No process is left behind. Or keep it up in the background "
            "between studies: `local up -f VALUES`, `local run --study DIR` (no new "
            "start), `local status`, `local down` (one cluster per --state-dir; a "
            "crashed one is detected and removed by the next of these)."))
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="{up,run,status,down}",
                   help="keep a cluster up between studies: `up -f VALUES` starts it in the "
                        "background, `run --study DIR` runs a study on it, `status`, `down`. "
                        "Without an action: start a cluster, run --study, stop (or --keep)")
    add_values(p)
    add_study(p, required=False)
    add_batching(p)
    p.add_argument("--results", type=Path, metavar="FILE", action="append", default=[],
                   help="FILE.json: every result with its execution metadata, and every "
                        "failed (set, seed) run with its error type (NaN/inf as NaN/Infinity; what "
                        "--compare reads); FILE.parquet (needs pyarrow) or FILE.csv: one row "
                        "per (set, seed), params, outputs and execution metadata as columns. "
                        "Repeatable")
    p.add_argument("--compare", type=Path, metavar="FILE",
                   help="compare (set, seed) by (set, seed) (outputs, or the error type of a failed sim) "
                        "with an earlier --results FILE (exit "
                        f"{EXIT_DIFFERS} if any differ): does this mode change results?")
    add_results_store(p)
    p.add_argument("--keep", action="store_true",
                   help="keep the cluster up (after the study, if any) until Ctrl-C")
    add_local_cluster(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, else a plain line every "
                        "30 s: runs done of the total, failures, sets complete, rate, ETA)")
    dests = ("values", "set", "chart", "release", "start_timeout", "study", "sims",
             "results", "compare", "batch", "batch_seconds", "no_progress", "keep",
             "results_store", "retry_failed")
    p.set_defaults(func=main, local_defaults={d: p.get_default(d) for d in dests})
