"""`modelops-runtime local`: the chart's scheduler and workers as local processes (the
command line; the work is modelops_runtime.local.study.command)."""

from __future__ import annotations

from pathlib import Path

from ..exitcodes import EXIT_DIFFERS
from ..local.study.command import EXIT_CODES, main
from .options import add_batching, add_command, add_local_cluster, add_study, add_values


def register(sub) -> None:
    p = add_command(
        sub, "local", exit_codes=EXIT_CODES,
        help="run the chart's scheduler and workers as local processes",
        description=(
            "Render chart/ with helm from the given values files and start its "
            "scheduler and worker containers (command, args, env) as local "
            "processes on 127.0.0.1: the same configuration the pods get. Then run "
            "a study (--study) and stop, or keep the cluster up (--keep) until "
            "Ctrl-C. No process is left behind."))
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
    p.add_argument("--keep", action="store_true",
                   help="keep the cluster up (after the study, if any) until Ctrl-C")
    add_local_cluster(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
