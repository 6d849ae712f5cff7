"""Isolation without the wait (issue #14): fresh processes from a template, batched tiny sims.

* heavy import — a bundle whose dependency (a wheel installed in its venv by uv) takes 0.5 s
  to import (a sleep at import, as a real framework takes seconds): per-task time of a warm
  hit (prod-warm), a fresh process forked from the template (fresh-process, the default:
  the template imports the dependency once its probes find it clean) and one exec'd
  (``freshProcessFrom: exec``); the fresh-process overhead is template − warm hit. A
  bundle's *own* modules are imported by every task process (as by a new interpreter), so
  a slow import inside the bundle is paid per task by design (docs/modes.md).
* SIR — the example model (numpy, from PyPI through uv) through executors as a Dask worker
  process builds them, 2 task threads each (the machine's cores): prod-warm, fresh-process
  (template) and diagnose-fresh-venv, per sim; the fresh-venv case runs fewer sims (a venv
  build per sim) and is compared per sim.
* fork floor — SIR's marginal CPU per sim at the executor, one task at a time, for
  fresh-process and prod-warm against a bare fork server (forkfloor.py): what a fresh
  process per sim costs this machine at the least, and how much of fresh-process is ours.
* SIR through ``modelops-runtime local`` — 300 sims of the example as a new user runs it
  (``make run PRESET=...``) in prod-warm, fresh-process and diagnose-fresh-venv: the whole
  command's wall time (what the targets compare, as issue #14 measured) and the study's.
* batched end to end — a local cluster from values-examples/prod-warm.yaml: 10,000 no-op
  sims through ``submit_study`` (runs grouped into Dask tasks of ~0.1 s) against plain
  ``client.map`` of the same function, and 1,000 sims of 20 ms (a busy loop) against the
  machine's limit (cores × 50 sims/s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelops_runtime.bundles import pack
from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study
from modelops_runtime.local.cluster.launch import plan
from modelops_runtime.local.cluster.render import render_cluster
from modelops_runtime.local.cluster.supervise import LocalCluster
from modelops_runtime.models import Call

import forkfloor
from common import NOOP_MODEL, Workspace, environ, side_by_side
from endtoend import PRESET, _as_main_function, _quiet
from shared import write_bundle
from support.wheels import build_wheel, offline_uv_env

REPO = Path(__file__).resolve().parents[1]
SIR = REPO / "runtime" / "examples" / "sir" / "bundle"

HEAVY_LIB = '''
import time
time.sleep(0.5)   # what importing a heavy framework costs
'''

HEAVY_MODEL = '''
import heavylib  # noqa: F401 - a dependency that takes 0.5 s to import


def noop(params, seed):
    return {}
'''

BUSY_MODEL = '''
import time


def noop(params, seed):
    return {}


def busy(params, seed):
    """About 20 ms of CPU."""
    end = time.perf_counter() + params.get("seconds", 0.02)
    n = 0
    while time.perf_counter() < end:
        n += 1
    return {"n": n}
'''


def heavy_import(ws: Workspace, smoke: bool) -> dict[str, Any]:
    wheels = ws.root / "heavy-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    build_wheel(wheels, "heavylib", "1.0", {"heavylib.py": HEAVY_LIB})
    ref, _ = ws.bundle("heavy", {"model.py": HEAVY_MODEL, "requirements.txt": "heavylib==1.0\n"})
    call = Call(bundle=ref, entrypoint="model:noop", args=({}, 0))
    with environ(offline_uv_env(wheels)):  # uv installs heavylib from the wheel only
        return _heavy_import(ws, call, smoke)


def _heavy_import(ws: Workspace, call: Call, smoke: bool) -> dict[str, Any]:
    warm = ws.executor(executor_type="isolated_warm")
    template = ws.executor(executor_type="isolated_warm", max_process_reuse=1)
    exec_ = ws.executor(executor_type="isolated_warm", max_process_reuse=1,
                        fresh_process_from="exec")
    try:
        samples = side_by_side({"warm hit": lambda: warm.run(call),
                                "fresh process from the template": lambda: template.run(call),
                                "fresh process by exec": lambda: exec_.run(call)},
                               rounds=2 if smoke else 5,
                               per_round={"warm hit": 20 if smoke else 100,
                                          "fresh process from the template": 5 if smoke else 40,
                                          "fresh process by exec": 1 if smoke else 3})
    finally:
        for ex in (warm, template, exec_):
            ex.shutdown()
    out = {name: {"median_s": s.median, "p90_s": s.p90, "n": len(s.times)}
           for name, s in samples.items()}
    out["overhead_s"] = (out["fresh process from the template"]["median_s"]
                         - out["warm hit"]["median_s"])
    return out


def sir(ws: Workspace, smoke: bool) -> dict[str, Any]:
    ref = pack(SIR, str(ws.repo))
    sims = 10 if smoke else 300
    fresh_venv_sims = 4 if smoke else 30
    threads = max(1, os.cpu_count() or 1)
    cases = {"prod-warm": ({"executor_type": "isolated_warm"}, sims),
             "fresh-process": ({"executor_type": "isolated_warm", "max_process_reuse": 1}, sims),
             "diagnose-fresh-venv": ({"executor_type": "isolated_warm",
                                      "force_fresh_venv": True}, fresh_venv_sims)}
    params = {"population": 10_000, "beta": 0.3, "gamma": 0.1, "days": 160}
    out: dict[str, Any] = {}
    executors = {name: ws.executor(**settings) for name, (settings, _) in cases.items()}
    try:
        executors["prod-warm"].run(Call(bundle=ref, entrypoint="sir.model:simulate",
                                        args=(params, 0)))  # builds the cached venv (uv)
        for name, (_, n) in cases.items():
            ex = executors[name]
            ex.run(Call(bundle=ref, entrypoint="sir.model:simulate", args=(params, 0)))
            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda s: ex.run(Call(bundle=ref, entrypoint="sir.model:simulate",
                                                    args=(params, s))), range(n)))
            wall = time.perf_counter() - t0
            out[name] = {"sims": n, "wall_s": wall, "per_sim_s": wall / n}
    finally:
        for ex in executors.values():
            ex.shutdown()
    out["threads"] = threads
    return out


LOCAL_MODES = ("prod-warm", "fresh-process", "diagnose-fresh-venv")
_ELAPSED = re.compile(r"sims: (\d+) ok, (\d+) failed; elapsed ([0-9.]+) s(?:; (\d+) Dask task)?")
_PLAN = re.compile(r"batch plan: (\d+) run\(s\) per Dask task(.*)")


def sir_local(ws: Workspace, smoke: bool) -> dict[str, Any]:
    """The SIR example as a new user runs it: ``modelops-runtime local -f
    values-examples/<mode>.yaml --study runtime/examples/sir --sims 300`` (what ``make run
    PRESET=<mode>`` runs), one state directory per mode kept between runs (its uv cache,
    bundle and venv caches warm after an untimed first run), the modes interleaved round by
    round. Whole command (cluster start and stop included: what the user waits for, as
    issue #14 measured it) and the study alone (the ``elapsed`` the command prints), with
    the Dask tasks and the batch plan of the round whose study was fastest."""
    sims = 10 if smoke else 300
    cli = Path(sys.executable).with_name("modelops-runtime")
    times: dict[str, dict[str, list[float]]] = {m: {"command_s": [], "study_s": []}
                                                for m in LOCAL_MODES}
    batching: dict[str, list[dict[str, Any]]] = {m: [] for m in LOCAL_MODES}

    def once(mode: str, n: int) -> tuple[float, float, dict[str, Any]]:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(cli), "local", "-f", str(REPO / "values-examples" / f"{mode}.yaml"),
             "--study", str(REPO / "runtime" / "examples" / "sir"), "--sims", str(n),
             "--no-progress", "--state-dir", str(ws.root / mode)],
            capture_output=True, text=True, timeout=3600, cwd=REPO)
        wall = time.perf_counter() - t0
        out = proc.stdout + proc.stderr
        found = _ELAPSED.search(out)
        if proc.returncode != 0 or not found or int(found[1]) != n:
            tail = out if len(out) < 6000 else out[:3000] + "\n...\n" + out[-3000:]
            raise RuntimeError(f"`modelops-runtime local` in {mode} exited {proc.returncode}:"
                               f"\n{tail}")
        plan = _PLAN.search(out)
        return wall, float(found[3]), {
            "dask_tasks": int(found[4]) if found[4] else None,
            "runs_per_task": int(plan[1]) if plan else None,
            "batch_plan": plan[0].removeprefix("batch plan: ") if plan else ""}

    for mode in () if smoke else LOCAL_MODES:
        once(mode, 8)  # untimed: builds the cached venv, fills uv's cache
    for _ in range(1 if smoke else 3):
        for mode in LOCAL_MODES:
            wall, study, grouped = once(mode, sims)
            times[mode]["command_s"].append(wall)
            times[mode]["study_s"].append(study)
            batching[mode].append(grouped)
    out: dict[str, Any] = {"sims": sims}
    for mode, t in times.items():
        out[mode] = {k: min(v) for k, v in t.items()}
        best = t["study_s"].index(out[mode]["study_s"])
        out[mode].update(batching[mode][best])
    return out


def batched(ws: Workspace, smoke: bool) -> dict[str, Any]:
    sims = 500 if smoke else 10_000
    busy_sims = 100 if smoke else 1_000
    state = ws.root / "local-state"
    own = [f"bundles.repo=file://{state / 'bundle-repo'}"]
    rendered = render_cluster([PRESET], own)
    launch = plan(rendered, state)
    src = write_bundle(ws.root / "src" / "busy", {"model.py": BUSY_MODEL})
    launch.bundle_repo.mkdir(parents=True, exist_ok=True)
    ref = pack(src, str(launch.bundle_repo))
    noop = _as_main_function(src / "model.py", "noop")
    out: dict[str, Any] = {"sims": sims, "busy_sims": busy_sims, "cores": os.cpu_count()}

    def study(name: str, entrypoint: str, n: int, params: dict) -> StudyPlan:
        return StudyPlan(name=name, bundle=ref, entrypoint=entrypoint,
                         sets=[ParamSet.of(params)], seeds=Seeds(count=n))

    with LocalCluster(launch, echo=_quiet) as cluster:
        client = cluster.client()
        out["worker_processes"] = len(client.scheduler_info(n_workers=-1)["workers"])
        gather_study(client, submit_study(client, study("warmup", "model:noop", 200, {})),
                     progress=False)
        client.gather(client.map(noop, [{}] * 50, range(50), key=[f"w-{i}" for i in range(50)]))
        times: dict[str, list[float]] = {"batched": [], "plain client.map": []}
        tasks = []
        for r in range(1 if smoke else 2):
            t0 = time.perf_counter()
            sub = submit_study(client, study(f"noop{r}", "model:noop", sims, {}),
                               window=sims)
            res = gather_study(client, sub, progress=False)
            times["batched"].append(time.perf_counter() - t0)
            assert res.runs == sims and not res.failures
            tasks.append(sub.tasks)
            t0 = time.perf_counter()
            futures = client.map(noop, [{}] * sims, range(sims),
                                 key=[f"plain-{r}-{i}" for i in range(sims)])
            assert len(client.gather(futures)) == sims
            del futures
            times["plain client.map"].append(time.perf_counter() - t0)
        out["noop"] = {name: min(v) for name, v in times.items()}
        out["noop_dask_tasks"] = tasks
        t0 = time.perf_counter()
        sub = submit_study(client, study("busy", "model:busy", busy_sims, {"seconds": 0.02}),
                           window=busy_sims)
        res = gather_study(client, sub, progress=False)
        wall = time.perf_counter() - t0
        assert res.runs == busy_sims and not res.failures
        out["busy"] = {"wall_s": wall, "sims_per_s": busy_sims / wall,
                       "dask_tasks": sub.tasks}
    shutil.rmtree(state, ignore_errors=True)
    return out


def fork_floor(ws: Workspace, smoke: bool) -> dict[str, Any]:
    """SIR's marginal CPU per sim at the executor, one task at a time: fresh-process and
    prod-warm against the bare fork floor (forkfloor.py)."""
    if smoke:
        return forkfloor.marginal(ws.root, small=2, big=6, rounds=1)
    return forkfloor.marginal(ws.root, small=100, big=600, rounds=2)


CASES = (("heavy_import", heavy_import), ("batched", batched), ("sir", sir),
         ("fork_floor", fork_floor), ("sir_local", sir_local))


def run(ws: Workspace, *, smoke: bool, cases=CASES) -> dict[str, Any]:
    """Every case, also after one failed: a failure is stored as ``{"error": ...}`` (its
    traceback printed) and makes bench/run.py exit 1 once the table is written."""
    out: dict[str, Any] = {"load_at_start": os.getloadavg()}
    for name, fn in cases:
        print(f"   {name}", flush=True)
        sub = ws.root / name
        sub.mkdir()
        try:
            out[name] = fn(Workspace(sub), smoke)
        except Exception as exc:  # noqa: BLE001 - the others still run; run.py fails at the end
            traceback.print_exc()
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    out["load_at_end"] = os.getloadavg()
    return out


if __name__ == "__main__":  # quick look: python bench/fast.py [--smoke]
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        print(json.dumps(run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv), indent=1,
                         default=str))
