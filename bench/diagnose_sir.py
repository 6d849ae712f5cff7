"""How long `modelops-runtime diagnose` takes on the SIR example (40 sims, prod-warm),
measured once and written to bench/diagnose.md (a figure, not a ratio and not a test).

    .venv/bin/python bench/diagnose_sir.py [--sims 40] [--state-dir DIR]

The bundle's venv installs numpy from the package index configured for uv (PyPI by
default); the direct step needs the bundle's requirements in this environment (the local
stand-in for the worker image): `.venv/bin/pip install -r runtime/examples/sir/bundle/
requirements.txt`, as `make run PRESET=debug-parallel` does; without them the step is
skipped and says so. A new state directory (empty caches) unless --state-dir is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "diagnose.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=40)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args()
    machine = describe()
    with tempfile.TemporaryDirectory(prefix="diagnose-bench-") as tmp:
        state = args.state_dir or Path(tmp) / "state"
        cmd = [str(Path(sys.executable).parent / "modelops-runtime"), "diagnose",
               "-f", "values-examples/prod-warm.yaml", "--study", "runtime/examples/sir",
               "--sims", str(args.sims), "--state-dir", str(state), "--json"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
        total = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        return proc.returncode
    doc = json.loads(proc.stdout)
    lines = [
        "# diagnose on the SIR example",
        "",
        f"`.venv/bin/python bench/diagnose_sir.py` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: `modelops-runtime diagnose -f "
        f"values-examples/prod-warm.yaml --study runtime/examples/sir --sims {args.sims}` "
        f"from {'empty caches' if args.state_dir is None else 'the given state directory'}"
        f" (the first step builds the bundle's venv with numpy).",
        "",
        f"**Total: {total:.0f} s** (exit {proc.returncode}; verdict: {doc['summary']}).",
        "",
        "| step | mode | time |",
        "|---|---|---|",
    ]
    for s in doc["steps"]:
        status = f"{s['elapsed_s']:.1f} s" if s["ran"] else f"skipped: {s['skipped']}"
        lines.append(f"| {s['name']} | {s['mode'] or '-'} | {status} |")
    lines += ["", "| machine |  |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT}: total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
