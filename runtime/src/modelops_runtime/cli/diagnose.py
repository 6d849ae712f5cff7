"""`modelops-runtime diagnose`: which layer changes the results (the work is
modelops_runtime.local.diagnose.steps*)."""

from __future__ import annotations

from pathlib import Path

from ..local.diagnose.command import EXIT_CODES, main
from .options import (add_command, add_json, add_local_cluster, add_results_store, add_study,
                      add_values)


def register(sub) -> None:
    p = add_command(
        sub, "diagnose", exit_codes=EXIT_CODES,
        help="find the layer (process state, venv, environment, threads, concurrency) that "
             "changes a study's results",
        description=(
            "Run the study on real local clusters rendered from your values, in your mode "
            "twice and then in steps that each remove one layer (fresh-process, fresh-venv, "
            "direct, native threads varied, one process), compare every pair seed by seed "
            "and name the layer from which pairs differ, with the evidence. 20-40 seeds "
            "usually suffice (--sims). No process is left behind."))
    add_values(p)
    add_study(p, required=True)
    add_json(p, "the verdict, steps and matrix")
    p.add_argument("--report", type=Path, metavar="FILE.html",
                   help="write a self-contained HTML page: the verdict and the seed × step "
                        "matrix as a picture")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where each step's --results file and the log go (default: "
                        "<state-dir>/diagnose/<time>-<pid>)")
    add_results_store(p, per_step=True)
    add_local_cluster(p)
    p.set_defaults(func=main)
