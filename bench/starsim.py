"""Starsim (numba, scipy, pandas) through the warm executor: per-run time in prod-warm vs a
plain loop, and a fresh process's first task with a cold vs a warm numba compile cache;
measured once, written to bench/starsim.md (figures side by side, not a test).

    .venv/bin/python bench/starsim.py [--runs 20] [--rounds 3] [--agents 5000]

- plain loop: ``simulate(params, seed)`` called in one interpreter per seed and in one
  interpreter for all seeds, in a venv of the tests' lock (ci/wheelhouse) built by uv;
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

REPO = HERE.parent
OUT = HERE / "starsim.md"
WHEELHOUSE = REPO / ".tools" / "wheelhouse"
REQUIREMENTS = "starsim==3.7.2\n"
MODEL = '''
import starsim as ss


def simulate(params, seed):
    sim = ss.Sim(n_agents=params["agents"], rand_seed=seed, start=2000,
                 stop=2000 + params["years"], verbose=0,
                 diseases=ss.SIR(beta=0.1, init_prev=0.02), networks=ss.RandomNet(n_contacts=4))
    sim.run()
    return {"infected": float(sim.results.sir.n_infected[-1])}
'''
LOOP = '''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ssir import simulate
params, seeds = json.loads(sys.argv[2]), json.loads(sys.argv[3])
times = []
for seed in seeds:
    t0 = time.perf_counter()
    simulate(params, seed)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
'''


def _uv(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("uv")), *args], check=True,
                   capture_output=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--years", type=int, default=20)
    args = parser.parse_args()
    if not (WHEELHOUSE / "COMPLETE").is_file():
        sys.exit(f"starsim bench: {WHEELHOUSE} is not fetched; run `make wheelhouse`")
    # the runtime passes uv's own variables through: offline, from the wheelhouse
    os.environ.update(UV_FIND_LINKS=str(WHEELHOUSE), UV_NO_INDEX="1", UV_OFFLINE="1")
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
        env = {**os.environ, "HOME": str(home)}
        subprocess.run([python, "-c", LOOP, str(src), _json(params), "[0]"],
                       env=env, check=True, capture_output=True)  # numba's cache in the venv: warm

        # plain loop: one interpreter for all seeds; one interpreter per seed (whole command)
        out = subprocess.run([python, "-c", LOOP, str(src), _json(params), _json(seeds)], env=env,
                             check=True, capture_output=True, text=True)
        loop_runs = _floats(out.stdout)
        per_seed = []
        for seed in seeds[:max(3, args.runs // 4)]:
            t0 = time.perf_counter()
            subprocess.run([python, "-c", LOOP, str(src), _json(params), f"[{seed}]"], env=env,
                           check=True, capture_output=True)
            per_seed.append(time.perf_counter() - t0)

        # prod-warm: the warm process's runs after its first
        ex = ws.executor(executor_type="isolated_warm")
        try:
            t0 = time.perf_counter()
            ex.run(Call(bundle=ref, entrypoint="ssir:simulate", args=(params, 0)))
            warm_first = time.perf_counter() - t0
            warm_runs = []
            for seed in seeds:
                t0 = time.perf_counter()
                ex.run(Call(bundle=ref, entrypoint="ssir:simulate", args=(params, seed)))
                warm_runs.append(time.perf_counter() - t0)
        finally:
            ex.shutdown()

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
        "(ci/wheelhouse), uv offline. Wall time per run, median.",
        "",
        "| case | per run | n | vs plain loop |",
        "|---|---|---|---|",
        f"| plain loop, one interpreter | {med(loop_runs):.3f} s | {len(loop_runs)} | 1.00× |",
        f"| prod-warm, warm process (after its first task) | {med(warm_runs):.3f} s | "
        f"{len(warm_runs)} | {med(warm_runs) / med(loop_runs):.2f}× |",
        f"| plain loop, a new interpreter per seed (whole command) | {med(per_seed):.3f} s | "
        f"{len(per_seed)} | {med(per_seed) / med(loop_runs):.2f}× |",
        f"| prod-warm, first task (spawn, import, numba cache cold) | {warm_first:.3f} s | 1 | "
        f"{warm_first / med(loop_runs):.2f}× |",
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


def _floats(text: str) -> list[float]:
    return [float(x) for x in json.loads(text.strip().splitlines()[-1])]


if __name__ == "__main__":
    sys.exit(main())
