"""Starsim (numba, scipy, pandas) through the warm executor: per-run time in prod-warm vs a
plain loop, and a fresh process's first task with a cold vs a warm numba compile cache;
measured once, written to bench/starsim.md (figures side by side, not a test).

    .venv/bin/python bench/starsim.py [--runs 20] [--rounds 3] [--agents 20000] [--years 40]

- plain loop: ``simulate(params, seed)`` called in one interpreter per seed and in one
  interpreter for all seeds, in a venv of the tests' lock (ci/wheelhouse) built by uv,
  with the native thread count a warm process gets (1);
- prod-warm: the executor a Dask worker process builds (isolated_warm), runs after the
  first (its warm process has imported starsim and compiled its numba functions);
- numba compile cache (issue #23): ``maxProcessReuse: 1`` by exec (a new interpreter per
  task, no template), a new executor per round: its first task compiles starsim's numba
  functions into the (venv, bundle)'s empty cache, the second loads them.

Needs the tests' wheelhouse (`make wheelhouse`): uv installs offline from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Workspace  # noqa: E402
from machine import describe  # noqa: E402
from modelops_runtime.models import Call  # noqa: E402
from modelops_runtime.worker.native import thread_env  # noqa: E402

REPO = HERE.parent
OUT = HERE / "starsim.md"
WHEELHOUSE = REPO / ".tools" / "wheelhouse"
REQUIREMENTS = "starsim==3.7.2\n"
MODEL = '''
import time

import starsim as ss


def simulate(params, seed):
    wall, cpu = time.perf_counter(), time.process_time()
    sim = ss.Sim(n_agents=params["agents"], rand_seed=seed, start=2000,
                 stop=2000 + params["years"], verbose=0,
                 diseases=ss.SIR(beta=0.1, init_prev=0.02), networks=ss.RandomNet(n_contacts=4))
    sim.run()
    return {"infected": float(sim.results.sir.n_infected[-1]),
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
'''
LOOP = '''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ssir import simulate
params, seeds = json.loads(sys.argv[2]), json.loads(sys.argv[3])
runs = []
for seed in seeds:
    t0 = time.perf_counter()
    out = simulate(params, seed)
    runs.append([time.perf_counter() - t0, out["cpu_s"]])
print(json.dumps(runs))
'''


def _uv(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("uv")), *args], check=True,
                   capture_output=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument("--years", type=int, default=40)
    args = parser.parse_args()
    if not (WHEELHOUSE / "COMPLETE").is_file():
        sys.exit(f"starsim bench: {WHEELHOUSE} is not fetched; run `make wheelhouse`")
    # the runtime passes uv's own variables through: offline, from the wheelhouse
    os.environ.update(UV_FIND_LINKS=str(WHEELHOUSE), UV_OFFLINE="1")
    params = {"agents": args.agents, "years": args.years}
    seeds = list(range(args.runs))
    with tempfile.TemporaryDirectory(prefix="modelops-bench-starsim-") as tmp:
        ws = Workspace(Path(tmp))
        ref, src = ws.bundle("ssir", {"requirements.txt": REQUIREMENTS, "ssir.py": MODEL})
        os.environ["UV_CACHE_DIR"] = str(Path(tmp) / "uv-cache")
        venv = Path(tmp) / "plain-venv"
        _uv("venv", "--quiet", "--python", sys.executable, str(venv))
        _uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "starsim==3.7.2")
        python = str(venv / "bin" / "python")
        home = Path(tmp) / "home"
        home.mkdir()
        # the native thread count a warm process gets (nativeThreads: 1), so the ratio is
        # the runtime's cost, not a thread count's
        env = {**os.environ, "HOME": str(home), **thread_env(1)}
        subprocess.run([python, "-c", LOOP, str(src), _json(params), "[0]"],
                       env=env, check=True, capture_output=True)  # numba's cache in the venv: warm

        # plain loop (one interpreter for all seeds) and prod-warm (the warm process's runs
        # after its first), interleaved round by round: the machine's load changes meanwhile
        ex = ws.executor(executor_type="isolated_warm")
        loop_runs, warm_runs = [], []
        try:
            t0 = time.perf_counter()
            ex.run(Call(bundle=ref, entrypoint="ssir:simulate", args=(params, 0)))
            warm_first = time.perf_counter() - t0
            for r in range(args.rounds):
                batch = seeds[r::args.rounds]
                out = subprocess.run([python, "-c", LOOP, str(src), _json(params), _json(batch)],
                                     env=env, check=True, capture_output=True, text=True)
                loop_runs += json.loads(out.stdout.strip().splitlines()[-1])
                for seed in batch:
                    t0 = time.perf_counter()
                    res = ex.run(Call(bundle=ref, entrypoint="ssir:simulate", args=(params, seed)))
                    warm_runs.append([time.perf_counter() - t0, res.outputs["cpu_s"]])
        finally:
            ex.shutdown()
        per_seed = []
        for seed in seeds[:3]:
            t0 = time.perf_counter()
            subprocess.run([python, "-c", LOOP, str(src), _json(params), f"[{seed}]"], env=env,
                           check=True, capture_output=True)
            per_seed.append(time.perf_counter() - t0)

        # a fresh process's first task: cold vs warm compile cache (new executor per round)
        cold, warm = [], []
        for r in range(args.rounds):
            ex = ws.executor(executor_type="isolated_warm", max_process_reuse=1,
                             fresh_process_from="exec")
            try:
                for sink, seed in ((cold, 2 * r), (warm, 2 * r + 1)):
                    t0 = time.perf_counter()
                    ex.run(Call(bundle=ref, entrypoint="ssir:simulate", args=(params, seed)))
                    sink.append(time.perf_counter() - t0)
            finally:
                ex.shutdown()

    med = statistics.median
    lines = [
        "# starsim through the warm executor",
        "",
        f"`.venv/bin/python bench/starsim.py --runs {args.runs} --rounds {args.rounds} "
        f"--agents {args.agents} --years {args.years}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Starsim 3.7.2 SIR on a random "
        f"network, {args.agents} agents, {args.years} years; venvs from the tests' lock "
        "(ci/wheelhouse), uv offline; the plain loop with the warm processes' native thread "
        "count (1). Wall time per run, median; load average below.",
        "",
        "| case | per run (wall) | its simulation's CPU time | n | wall vs plain loop |",
        "|---|---|---|---|---|",
        f"| plain loop, one interpreter | {_med(loop_runs, 0):.3f} s | {_med(loop_runs, 1):.3f} s | "
        f"{len(loop_runs)} | 1.00× |",
        f"| prod-warm, warm process (after its first task) | {_med(warm_runs, 0):.3f} s | "
        f"{_med(warm_runs, 1):.3f} s | {len(warm_runs)} | "
        f"{_med(warm_runs, 0) / _med(loop_runs, 0):.2f}× |",
        f"| plain loop, a new interpreter per seed (whole command) | {med(per_seed):.3f} s | | "
        f"{len(per_seed)} | {med(per_seed) / _med(loop_runs, 0):.2f}× |",
        f"| prod-warm, first task (spawn, import, numba cache cold) | {warm_first:.3f} s | | 1 | "
        f"{warm_first / _med(loop_runs, 0):.2f}× |",
        "",
        "The plain loop and the warm process run interleaved, round by round; the CPU time is "
        "measured inside the model (`time.process_time()` around `sim.run()`), so it does not "
        "move with the machine's load as wall time does.",
        "",
        "A fresh process's first task (`maxProcessReuse: 1`, exec: a new interpreter, starsim "
        "imported) with the (venv, bundle)'s numba compile cache empty vs filled by the "
        "task before it:",
        "",
        "| numba compile cache | first task | n |",
        "|---|---|---|",
        f"| cold (compiles starsim's functions) | {med(cold):.3f} s | {len(cold)} |",
        f"| warm (loads them) | {med(warm):.3f} s | {len(warm)} |",
        f"| saved per process | {med(cold) - med(warm):.3f} s ({med(cold) / med(warm):.2f}×) | |",
        "",
        "| machine |  |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in describe().items()]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _json(value) -> str:
    return json.dumps(value)


def _med(runs: list, i: int) -> float:
    return statistics.median(r[i] for r in runs)


if __name__ == "__main__":
    sys.exit(main())
