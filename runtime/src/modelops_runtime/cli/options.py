"""Options that several `modelops-runtime` commands share: one definition, one help text.
(And the layout of a command whose --help lists its exit codes.)

A command adds the groups it takes (``add_values(parser)``, ...); the destinations are
what modelops_runtime.local reads (``args.values``, ``args.set``, ``args.state_dir``, ...).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..client import BATCH_TARGET
from ..local.cluster.render import DEFAULT_RELEASE
from ..local.study.run import STUDY_FILE


def add_command(sub, name: str, *, help: str, description: str,
                exit_codes: str) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with its exit codes (EXIT_CODES, laid out as
    written) after the description (one paragraph, filled)."""
    return sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=exit_codes, description=textwrap.fill(description))


def add_values(p: argparse.ArgumentParser) -> None:
    """``-f/--values`` and ``--set``, as helm takes them."""
    p.add_argument("-f", "--values", action="append", default=[], type=Path, metavar="VALUES",
                   help="values file (repeatable, later files win; like helm -f)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="value override (repeatable; like helm --set)")


def add_study(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``--study`` and ``--sims``."""
    p.add_argument("--study", type=Path, metavar="PATH", required=required,
                   help=f"the study: a directory with {STUDY_FILE} or a study file")
    p.add_argument("--sims", type=int, metavar="N",
                   help="number of seeds (per parameter set; default: the study's)")


def add_local_cluster(p: argparse.ArgumentParser) -> None:
    """What a local cluster is rendered and started with: ``--chart``, ``--release``,
    ``--state-dir``, ``--start-timeout``."""
    p.add_argument("--chart", type=Path, help="chart directory (default: the repository's chart/)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="release name to render with")
    p.add_argument("--state-dir", type=Path,
                   help="local stand-in for the pod volumes (the uv, bundle and venv caches), "
                        "the bundle repo and logs (default: .state/local in the repository)")
    p.add_argument("--start-timeout", type=float, default=180, metavar="S",
                   help="seconds to wait for every worker process of a cluster to connect")


def add_batching(p: argparse.ArgumentParser) -> None:
    """``--batch`` and ``--batch-seconds``: how runs are grouped into Dask tasks."""
    p.add_argument("--batch", type=_positive_int, metavar="N",
                   help="runs per Dask task (default: measured, so that a task holds about "
                        "--batch-seconds of model time; 1: one run per task, never grouped)")
    p.add_argument("--batch-seconds", type=_positive_float, default=BATCH_TARGET, metavar="S",
                   help=f"model time per Dask task when runs are grouped (default "
                        f"{BATCH_TARGET}; larger: fewer round trips, coarser progress)")


def add_results_store(p: argparse.ArgumentParser, *, per_step: bool = False) -> None:
    """``--results-store URL`` and ``--retry-failed`` (``per_step``: diagnose's words)."""
    where = ("keep each step's runs in a results store under URL/<n>-<step> (a rerun after "
             "an interruption reruns only each step's missing runs; a step resumed on a new "
             "cluster mixes two clusters' processes in its process_task_count): "
             if per_step else "keep the study's runs in a results store: ")
    p.add_argument("--results-store", metavar="URL",
                   help=where + "a directory or an fsspec "
                        "URL (s3://bucket/prefix needs s3fs). Each run is written as it "
                        "finishes (Parquet parts, a manifest of the study's inputs); run the "
                        "same command again after any interruption and only the missing "
                        "(set, seed) runs run. A store of other inputs is refused. Read it "
                        "with `modelops-runtime results URL`")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --results-store: run the store's failed runs again (kept, "
                        "not rerun, otherwise)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """``--json``: WHAT as one JSON document on stdout."""
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as one JSON document on stdout (anything else goes to "
                        "stderr)")
