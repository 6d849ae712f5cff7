"""CPU per sim of a fresh process: ours against the bare fork floor, measured (issue #22).

* covers: the SIR example run N times in a row, one task at a time, in three ways, each in a
  child process whose whole tree's CPU is read when it ends (its own and every process it
  reaped, recursively): ``floor`` — the least a fork per sim can cost: a Python with numpy
  imported forks a child per sim, the child imports the bundle's module (from its pyc),
  runs it, pickles the result into a pipe and ``_exit``s; ``fresh-process`` and
  ``prod-warm`` — the executor a Dask worker process builds in those presets. The marginal
  CPU per sim is (CPU of ``big`` sims − CPU of ``small`` sims) / (big − small), so start-up
  costs (interpreters, venvs, templates) cancel out.
* does not: time anything with Dask or a study (``fast.sir_local`` does); compare against
  exec (a new interpreter costs ~0.1 s per sim here, not a floor of anything).
* see also: docs/benchmarks.md "Where the ratio stands" (what the floor is made of).

Run alone: ``.venv/bin/python bench/forkfloor.py [--small 100 --big 1000]``; ``fast.py``
calls :func:`marginal` for ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIR = HERE.parent / "runtime" / "examples" / "sir" / "bundle"
PARAMS = {"population": 10_000, "beta": 0.3, "gamma": 0.1, "days": 160}
WAYS = ("floor", "fresh-process", "prod-warm")


def _floor(n: int, root: Path) -> None:
    """The bare fork server, the measured floor (no sandbox, no protocol, no RNG reseed).
    The bundle is copied under ``root`` and compiled first: a task imports it from its pyc,
    as our task processes do."""
    import compileall
    import importlib
    import shutil

    import numpy  # noqa: F401 - what our template imports for SIR (its plan): numpy and
    import numpy.random  # noqa: F401 - numpy.random, which numpy 2 imports lazily

    bundle = root / "bundle"
    if not bundle.exists():
        shutil.copytree(SIR, bundle)
        compileall.compile_dir(bundle, quiet=1)
    sys.path.insert(0, str(bundle))
    importlib.import_module("sir")  # the package only: its model module is the task's import
    for seed in range(n):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            model = importlib.import_module("sir.model")
            os.write(write, pickle.dumps(model.simulate(PARAMS, seed)))
            os._exit(0)
        os.close(write)
        data = bytearray()
        while chunk := os.read(read, 1 << 16):
            data += chunk
        os.close(read)
        os.waitpid(pid, 0)
        pickle.loads(data)


def _executor(way: str, n: int, root: Path) -> None:
    """``n`` sims through the executor of ``way``, the workspace (bundle repo, venv cache)
    under ``root`` kept between calls."""
    sys.path.insert(0, str(HERE))
    from modelops_runtime.bundles import pack
    from modelops_runtime.models import Call

    from common import Workspace

    settings = {"prod-warm": {"executor_type": "isolated_warm"},
                "fresh-process": {"executor_type": "isolated_warm",
                                  "max_process_reuse": 1}}[way]
    ws = Workspace(root)
    ref = pack(SIR, str(ws.repo))
    ex = ws.executor(**settings)
    try:
        for seed in range(n):
            ex.run(Call(bundle=ref, entrypoint="sir.model:simulate", args=(PARAMS, seed)))
    finally:
        ex.shutdown()


def _tree_cpu(way: str, n: int, root: Path) -> float:
    """CPU seconds of a child process that runs ``n`` sims ``way``, with every process it
    reaped (the rusage of our reaped children grows by exactly that tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, __file__, "--child", way, str(n), str(root)],
                   check=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def marginal(root: Path, *, small: int, big: int, rounds: int) -> dict[str, Any]:
    """Marginal CPU per sim of every way, interleaved round by round (best round kept)."""
    for way in WAYS:  # untimed: builds the venv, compiles pycs, stores template plans
        _tree_cpu(way, 4, root / way)
    per_sim: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(rounds):
        for way in WAYS:
            low = _tree_cpu(way, small, root / way)
            high = _tree_cpu(way, big, root / way)
            per_sim[way].append((high - low) / (big - small))
    out: dict[str, Any] = {"small": small, "big": big, "rounds": rounds,
                           "load": os.getloadavg()[0]}
    for way, values in per_sim.items():
        out[way] = {"cpu_per_sim_s": min(values), "all_s": values}
    out["above_floor_s"] = out["fresh-process"]["cpu_per_sim_s"] - out["floor"]["cpu_per_sim_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("WAY", "N", "ROOT"), help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.child:
        way, n, root = args.child[0], int(args.child[1]), Path(args.child[2])
        if way == "floor":
            _floor(n, root)
        else:
            _executor(way, n, root)
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forkfloor-") as tmp:
        out = marginal(Path(tmp), small=args.small, big=args.big, rounds=args.rounds)
    out["elapsed_s"] = time.perf_counter() - started
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
