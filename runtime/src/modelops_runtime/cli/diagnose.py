"""`modelops-runtime diagnose`: which layer changes the results (the work is
modelops_runtime.local.diagnose*)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..local.diagnose_command import EXIT_CODES, main
from ..local.render import DEFAULT_RELEASE
from ..local.study import STUDY_FILE


def register(sub) -> None:
    p = sub.add_parser(
        "diagnose", help="find the layer (process state, venv, environment, threads, "
                         "concurrency) that changes a study's results",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description=textwrap.fill(
            "Run the study on real local clusters rendered from your values, in your mode "
            "twice and then in steps that each remove one layer (fresh-process, fresh-venv, "
            "direct, native threads varied, one process), compare every pair seed by seed "
            "and name the layer from which pairs differ, with the evidence. No process is "
            "left behind."))
    p.add_argument("-f", "--values", action="append", default=[], type=Path, metavar="VALUES",
                   help="values file (repeatable, later files win; like helm -f)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="value override (repeatable; like helm --set)")
    p.add_argument("--study", type=Path, metavar="PATH", required=True,
                   help=f"the study: a directory with {STUDY_FILE} or a study file")
    p.add_argument("--sims", type=int, metavar="N",
                   help="seeds per step (default: the study's; 20-40 usually suffice)")
    p.add_argument("--json", action="store_true",
                   help="the verdict, steps and matrix as one JSON document on stdout "
                        "(progress lines go to stderr)")
    p.add_argument("--report", type=Path, metavar="FILE.html",
                   help="write a self-contained HTML page: the verdict and the seed × step "
                        "matrix as a picture")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where each step's --results file and the log go (default: "
                        "<state-dir>/diagnose/<time>-<pid>)")
    p.add_argument("--chart", type=Path, help="chart directory (default: the repository's chart/)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="release name to render with")
    p.add_argument("--state-dir", type=Path,
                   help="local stand-in for the pod volumes (shared by every step: the uv, "
                        "bundle and venv caches); default: .state/local in the repository")
    p.add_argument("--start-timeout", type=float, default=180, metavar="S",
                   help="seconds to wait for every worker process of a step to connect")
    p.set_defaults(func=main)
