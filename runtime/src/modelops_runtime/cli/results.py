"""`modelops-runtime results URL`: a results store's summary, or all its runs as one table
(the work is modelops_runtime.local.study.storeview)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ModelOpsError
from ..exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .options import add_command

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    the store was read (whether or not every run is done)
  {EXIT_FAILED}    not a results store, or it cannot be read (one line says why)
  {EXIT_USAGE}    bad command line"""


def register(sub) -> None:
    p = add_command(
        sub, "results", exit_codes=EXIT_CODES,
        help="summarise a results store (runs done/failed/missing, per-set aggregates)",
        description=(
            "Read a results store written by `local --results-store URL` or "
            "submit_study(store=URL) (a directory or an fsspec URL) and print the "
            "study it holds: runs done, failed and missing, per set, the aggregates "
            "made once no run was missing, the first failures. Nothing in the store "
            "is changed."))
    p.add_argument("url", metavar="URL", help="the results store (directory or fsspec URL)")
    p.add_argument("--table", type=Path, metavar="FILE",
                   help="also write every run as one table: FILE.parquet or FILE.csv")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..local.study.storeview import summary_lines, write_store_table
    from ..client.store import ResultsStore

    if args.table is not None and args.table.suffix.lower() not in (".parquet", ".csv"):
        print(f"error: --table {args.table}: give a .parquet or .csv file", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = ResultsStore.open(args.url)
        for line in summary_lines(store):
            print(line)
        if args.table is not None:
            n = write_store_table(store, args.table)
            print(f"table: {args.table} ({n:,} rows, one per set and seed)")
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
