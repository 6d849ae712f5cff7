"""`modelops-runtime compare A.json B.json`: two --results files, (set, seed) by (set, seed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ModelOpsError
from ..exitcodes import EXIT_DIFFERS, EXIT_FAILED, EXIT_INPUTS_DIFFER, EXIT_OK
from ..local.compare.runs import (InputsDiffer,
                             compare_runs, key_label, load_run, package_differences, same_mode)
from .options import add_command, add_json


EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every (set, seed) run both files cover has the same outcome (outputs, or error type)
  {EXIT_FAILED}    a file could not be read
  {EXIT_INPUTS_DIFFER}    the files' inputs differ (bundle, entrypoint, aggregation or a param): not
       comparable, one line names the difference; or a bad command line
  {EXIT_DIFFERS}    a (set, seed) run both files cover differs (runs only one covers are a note)"""


def register(sub) -> None:
    p = add_command(
        sub, "compare", help="compare two --results files, (set, seed) by (set, seed)", exit_codes=EXIT_CODES,
        description=(
            "Compare B with A (both written by `modelops-runtime local --results`) (set, "
            "seed) by (set, seed): outputs, or the error type of a failed sim. Files whose "
            "inputs differ are refused. Differing runs are broken down by "
            "process_task_count, and the package versions the two files ran with are set "
            "side by side. A study of one parameter set is compared seed by seed."))
    p.add_argument("a", type=Path, metavar="A.json", help="the reference run")
    p.add_argument("b", type=Path, metavar="B.json", help="the run compared with it")
    add_json(p, "the comparison")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        a, b = load_run(args.a, "compare"), load_run(args.b, "compare")
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        comparison = compare_runs(b, a)
    except InputsDiffer as exc:
        if args.json:
            print(json.dumps({"comparable": False, "reason": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUTS_DIFFER
    lines = []
    if a.inputs is None or b.inputs is None:
        lines.append("note: a file records no inputs (written by an older modelops-runtime): "
                     "the bundle and params could not be checked")
    lines += comparison.report(str(args.a), now_label=str(args.b), same_mode=same_mode(a, b))
    packages = package_differences(a, b)
    if packages:
        lines.append("packages differ: " + "; ".join(packages))
    code = EXIT_DIFFERS if comparison.differs else EXIT_OK
    if args.json:
        print(json.dumps({
            "comparable": True, "differs": comparison.differs, "exit_code": code,
            "compared": len(comparison.common),
            "differing": [key_label(k) for k in comparison.differing],
            "after_other_tasks": {str(args.a): [key_label(k) for k in comparison.after_other_tasks("before")],
                                  str(args.b): [key_label(k) for k in comparison.after_other_tasks("now")]},
            "only_in_a": [key_label(k) for k in comparison.only_before],
            "only_in_b": [key_label(k) for k in comparison.only_now],
            "same_mode": same_mode(a, b), "packages_differ": packages, "lines": lines},
            indent=1))
    else:
        for line in lines:
            print(f"compare: {line}")
    return code
