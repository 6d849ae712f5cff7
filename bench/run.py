"""`make bench`: every benchmark, side by side, into bench/results.md (+ raw JSON).

    .venv/bin/python bench/run.py            # full run (a few minutes)
    .venv/bin/python bench/run.py --smoke    # reduced sizes: checks it all works (< 1 min)

Benchmarks are not tests: nothing here fails on a slow number. Each target is reported
as met or not met, a miss explained by the measured numbers. A case that raises is shown
in the table and makes the run exit 1 (the others still run). Everything is built under one
temporary directory, removed at the end; every process started is stopped, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import endtoend  # noqa: E402
import fast  # noqa: E402
import machine  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import report  # noqa: E402
import steady  # noqa: E402
import venvbuild  # noqa: E402
from common import Workspace  # noqa: E402
from shared import replace_between  # noqa: E402

SECTIONS = {"overhead": overhead, "venv": venvbuild, "e2e": endtoend, "memory": memory,
            "fast": fast, "steady": steady}
README = HERE.parent / "docs" / "benchmarks.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through every cleanup below


def update_readme(markdown: str, readme: Path = README) -> bool:
    """Put ``markdown`` between docs/benchmarks.md's bench markers, if it has them."""
    if not readme.is_file():
        return False
    text = replace_between(readme.read_text(), README_START, README_END, markdown)
    if text is None:
        return False
    readme.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="reduced sizes (the test suite runs this); numbers are not measurements")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where results.md and results/*.json go (default: bench/)")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS),
                        help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _terminate)
    about = machine.describe()
    work = Path(tempfile.mkdtemp(prefix="modelops-bench-"))
    results: dict[str, object] = {}
    started = time.perf_counter()
    try:
        for name, module in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            print(f"== {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
            t0 = time.perf_counter()
            section_dir = work / name
            section_dir.mkdir()
            results[name] = module.run(Workspace(section_dir), smoke=args.smoke)
            print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started

    markdown = report.build(about, results, smoke=args.smoke, elapsed_s=elapsed)
    out = args.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = out / "results" / f"{stamp}{'-smoke' if args.smoke else ''}.json"
    raw.write_text(json.dumps({"machine": about, "smoke": args.smoke, "elapsed_s": elapsed,
                               "results": results,
                               "targets": report.evaluate(results)}, indent=1, default=str))
    print(f"\nwrote {out / 'results.md'} and {raw}")
    for t in report.evaluate(results):
        print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['shown']}")
    in_readme = (report.summary(about, results, smoke=False, elapsed_s=elapsed, level=3)
                 + "\nEvery benchmark's own table: `bench/results.md`.\n")
    if failed := failures(results):
        print(f"\nbench: {len(failed)} case(s) failed (shown in the table; their "
              "tracebacks above):", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    if not args.smoke and args.out == HERE and not args.only and update_readme(in_readme):
        print(f"updated the benchmark section of {README}")
    return 0


def failures(results: object, where: str = "") -> list[str]:
    """Every case that stored an error instead of numbers: ``section/case: error``."""
    if not isinstance(results, dict):
        return []
    if "error" in results:
        return [f"{where or '(top)'}: {results['error']}"]
    return [line for key, value in results.items()
            for line in failures(value, f"{where}/{key}" if where else str(key))]


if __name__ == "__main__":
    sys.exit(main())
