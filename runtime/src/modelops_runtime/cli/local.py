"""`modelops-runtime local`: the chart's scheduler and workers as local processes (the
command line; the work is modelops_runtime.local.command)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..local.command import EXIT_CODES, EXIT_DIFFERS, main
from ..local.render import DEFAULT_RELEASE
from ..local.study import STUDY_FILE


def register(sub) -> None:
    p = sub.add_parser(
        "local", help="run the chart's scheduler and workers as local processes",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description=textwrap.fill(
            "Render chart/ with helm from the given values files and start its "
            "scheduler and worker containers (command, args, env) as local "
            "processes on 127.0.0.1: the same configuration the pods get. Then run "
            "a study (--study) and stop, or keep the cluster up (--keep) until "
            "Ctrl-C. No process is left behind."))
    p.add_argument("-f", "--values", action="append", default=[], type=Path, metavar="VALUES",
                   help="values file (repeatable, later files win; like helm -f)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="value override (repeatable; like helm --set)")
    p.add_argument("--study", type=Path, metavar="PATH",
                   help=f"study to run: a directory with {STUDY_FILE} or a study file")
    p.add_argument("--sims", type=int, metavar="N",
                   help="number of seeds (per parameter set; default: the study's)")
    p.add_argument("--results", type=Path, metavar="FILE", action="append", default=[],
                   help="FILE.json: every result with its execution metadata, and every "
                        "failed seed with its error type (NaN/inf as NaN/Infinity; what "
                        "--compare reads); FILE.parquet (needs pyarrow) or FILE.csv: one row "
                        "per (set, seed), params, outputs and execution metadata as columns. "
                        "Repeatable")
    p.add_argument("--compare", type=Path, metavar="FILE",
                   help="compare seed by seed (outputs, or the error type of a failed sim) "
                        "with an earlier --results FILE (exit "
                        f"{EXIT_DIFFERS} if any differ): does this mode change results?")
    p.add_argument("--keep", action="store_true",
                   help="keep the cluster up (after the study, if any) until Ctrl-C")
    p.add_argument("--chart", type=Path, help="chart directory (default: the repository's chart/)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="release name to render with")
    p.add_argument("--state-dir", type=Path,
                   help="local stand-in for the pod volumes, bundle repo and logs "
                        "(default: .state/local in the repository)")
    p.add_argument("--start-timeout", type=float, default=180, metavar="S",
                   help="seconds to wait for every worker process to connect")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
