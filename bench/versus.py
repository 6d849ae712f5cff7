"""Two checkouts side by side: the SIR example, 300 sims through ``modelops-runtime local``,
the study alone (the ``elapsed`` line) and the whole command, per mode.

Usage (each checkout with its own ``make venv``)::

    .venv/bin/python bench/versus.py old=/path/to/main,new=. prod-warm,fresh-process 2

One state directory per (checkout, mode), kept between runs (uv, bundle and venv caches
warm after an untimed first run of 8 sims); checkouts and modes interleaved round by
round, so load from elsewhere on the machine hits both sides; the load average is printed
with every run, and the best of the rounds per (checkout, mode) at the end. Not part of
``make bench`` (it needs a second checkout).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ELAPSED = re.compile(r"sims: (\d+) ok, (\d+) failed; elapsed ([0-9.]+) s")


def once(root: Path, mode: str, sims: int, state: Path) -> tuple[float, float]:
    """(study alone, whole command) in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(root / ".venv" / "bin" / "modelops-runtime"), "local", "-f",
         str(root / "values-examples" / f"{mode}.yaml"), "--study",
         str(root / "runtime" / "examples" / "sir"), "--sims", str(sims), "--no-progress",
         "--state-dir", str(state)],
        capture_output=True, text=True, timeout=1800, cwd=root)
    wall = time.perf_counter() - t0
    found = ELAPSED.search(proc.stdout + proc.stderr)
    if proc.returncode or not found or int(found[1]) != sims:
        raise SystemExit(f"{root} {mode} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return float(found[3]), wall


def main(argv: list[str]) -> int:
    trees = {name: Path(path).resolve()
             for name, path in (pair.split("=", 1) for pair in argv[0].split(","))}
    modes = argv[1].split(",") if len(argv) > 1 else ["prod-warm", "fresh-process"]
    rounds = int(argv[2]) if len(argv) > 2 else 2
    with tempfile.TemporaryDirectory(prefix="modelops-versus-") as tmp:
        for tree, root in trees.items():
            for mode in modes:
                once(root, mode, 8, Path(tmp) / f"{tree}-{mode}")
        best: dict[str, list] = {}
        for r in range(rounds):
            for tree, root in trees.items():
                for mode in modes:
                    load = os.getloadavg()[0]
                    study, wall = once(root, mode, 300, Path(tmp) / f"{tree}-{mode}")
                    print(f"round {r} {tree:6s} {mode:20s} study {study:6.2f} s  command "
                          f"{wall:6.2f} s  load {load:.1f}", flush=True)
                    key = f"{tree}/{mode}"
                    if key not in best or study < best[key][0]:
                        best[key] = [study, wall, load]
    print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
