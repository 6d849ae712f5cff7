"""Steady state (issue #30): a second study on an already warm cluster, beside Ray.

* modelops — one cluster from values-examples/prod-warm.yaml kept up with ``modelops-runtime
  local up`` (4 worker processes × 1 thread); a first SIR study warms it (venv built by uv,
  warm processes alive; timed as "first batch after start"); then, round by round: SIR
  300 sims (the example's ``simulate``, auto-batched), 2,000 no-ops auto-batched, 2,000
  no-ops unbatched (``batch=1``), each the study alone through ``submit_study``; and
  ``modelops-runtime local run --study runtime/examples/sir`` on the same warm cluster
  (the whole command a modeller's edit-run loop waits for).
* Ray 2.60.0 — installed by uv into a bench-only venv (``.bench/ray-venv``, git-ignored) if
  that takes under RAY_INSTALL_S; plain ``@ray.remote`` tasks on ``ray.init(num_cpus=4)``,
  its warm repeat interleaved with ours (bench/ray_driver.py); SIR outputs compared seed by
  seed with ours (a digest). Skipped with one line otherwise.
* where the time goes — CPU seconds per run of each process class of the cluster
  (client = this process, scheduler, Dask worker processes with their nannies, warm
  runner processes; user and system time, system time being mostly the pipes and
  sockets), read from /proc (psutil) before and after each case; model time is what the
  runner measures around the entrypoint.
"""

from __future__ import annotations

import json
import os
import hashlib
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from modelops_runtime.bundles import pack
from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study

from shared import write_bundle

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SIR = REPO / "runtime" / "examples" / "sir"
PRESET = REPO / "values-examples" / "prod-warm.yaml"
RAY_VERSION = "2.60.0"
RAY_VENV = REPO / ".bench" / "ray-venv"
RAY_INSTALL_S = 240
CLI = Path(sys.executable).with_name("modelops-runtime")

NOOP_MODEL = '''
def noop(params, seed):
    return {}
'''


# -- Ray in its own venv -------------------------------------------------------------------


def ray_python() -> tuple[str | None, str]:
    """The bench-only Ray venv's Python (built by uv on first use), or None and why not."""
    python = RAY_VENV / "bin" / "python"
    marker = RAY_VENV / f".ray-{RAY_VERSION}"
    if marker.exists():
        return str(python), "cached"
    uv = Path(sys.executable).with_name("uv")
    t0 = time.perf_counter()
    try:
        subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(RAY_VENV)],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([str(uv), "pip", "install", "-q", "--python", str(python),
                        f"ray=={RAY_VERSION}", "numpy"],
                       check=True, capture_output=True, timeout=RAY_INSTALL_S)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, (f"Ray {RAY_VERSION} skipped: not installed within {RAY_INSTALL_S} s "
                      f"({type(exc).__name__}: {detail.decode(errors='replace')[-200:].strip()})")
    marker.touch()
    return str(python), f"installed in {time.perf_counter() - t0:.0f} s"


class RayDriver:
    """bench/ray_driver.py in the Ray venv: one command per line, one JSON reply per line."""

    def __init__(self, python: str, cpus: int, params: dict, temp: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(SIR / "bundle"), "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc = subprocess.Popen([python, str(HERE / "ray_driver.py"), str(cpus),
                                      json.dumps(params), str(temp)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, start_new_session=True)
        self.hello = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray driver exited ({self.proc.wait(30)})")
        return json.loads(line)

    def ask(self, op: str, n: int) -> dict:
        self.proc.stdin.write(f"{op} {n}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


# -- where the time goes -------------------------------------------------------------------


def _kind(proc: psutil.Process, supervisor: int) -> str | None:
    try:
        if proc.pid == supervisor:
            return None
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    if "modelops-runner-" in cmd or "warm/runner/main.py" in cmd:
        return "runner"
    if "scheduler" in cmd and "dask" in cmd:
        return "scheduler"
    return "worker"  # `dask worker` (nanny) and its worker processes


def cpu_snapshot(supervisor: int) -> dict[str, list[float]]:
    """CPU seconds (user, system) by process class now, summed over live processes; a warm
    process that ended meanwhile (retired after MAX_PROCESS_REUSE tasks) is counted in its
    Dask worker process's reaped-children times, so it stays on the runner's side."""
    out = {k: [0.0, 0.0] for k in ("client", "scheduler", "worker", "runner")}
    me = psutil.Process().cpu_times()
    out["client"] = [me.user, me.system]
    try:
        procs = psutil.Process(supervisor).children(recursive=True)
    except psutil.Error:
        procs = []
    for p in procs:
        kind = _kind(p, supervisor)
        if kind is None:
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[kind][0] += t.user
        out[kind][1] += t.system
        if kind == "worker":
            out["runner"][0] += t.children_user
            out["runner"][1] += t.children_system
    return out


def cpu_per_run(before: dict, after: dict, runs: int) -> dict[str, dict[str, float]]:
    return {k: {"user_s": (after[k][0] - before[k][0]) / runs,
                "system_s": (after[k][1] - before[k][1]) / runs} for k in before}


# -- the rounds ----------------------------------------------------------------------------


def _plain_noop():
    """A no-op defined as a script's ``__main__`` code is: Dask ships it by value, as it
    does a notebook's function (plain Dask, no modelops on the path)."""
    namespace = {"__name__": "__main__"}
    exec(compile(NOOP_MODEL, "noop.py", "exec"), namespace)
    return namespace["noop"]


def _digest(result) -> str:
    outputs = [r.outputs for s in result.sets for _, r in sorted(s.results.items())]
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()


def run(ws, *, smoke: bool) -> dict[str, Any]:
    try:
        return _run(ws, smoke)
    except Exception as exc:  # noqa: BLE001 - in the table; run.py fails at the end
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def _run(ws, smoke: bool) -> dict[str, Any]:
    import yaml
    from distributed import Client

    sims = 10 if smoke else 300
    noops = 100 if smoke else 2000
    rounds = 1 if smoke else 3
    params = yaml.safe_load((SIR / "study.yaml").read_text())["params"]
    state = ws.root / "local-state"
    out: dict[str, Any] = {"sims": sims, "noops": noops, "rounds": rounds,
                           "cores": os.cpu_count(), "load_at_start": os.getloadavg()}
    python, how = ray_python() if not smoke else (None, "Ray skipped in --smoke runs")
    out["ray_install"] = how
    print(f"   Ray: {how}", flush=True)

    up = subprocess.run([str(CLI), "local", "up", "-f", str(PRESET), "--state-dir", str(state)],
                        capture_output=True, text=True, timeout=600, cwd=REPO)
    if up.returncode != 0:
        raise RuntimeError(f"local up failed:\n{up.stdout}\n{up.stderr}")
    record = json.loads((state / "cluster.json").read_text())
    supervisor = record["supervisor_pid"]
    ray = None
    try:
        repo = state / "bundle-repo"
        sir_ref = pack(SIR / "bundle", str(repo))
        noop_src = write_bundle(ws.root / "src" / "noop", {"model.py": NOOP_MODEL})
        noop_ref = pack(noop_src, str(repo))
        client = Client(record["address"], timeout=60)
        slots = sum(client.nthreads().values())
        out["slots"] = slots
        counter = iter(range(10**6))

        def study(kind: str, n: int, **kw) -> tuple[float, Any, Any]:
            ref, ep, p = ((sir_ref, "sir.model:simulate", params) if kind == "sir"
                          else (noop_ref, "model:noop", {}))
            plan = StudyPlan(name=f"{kind}{next(counter)}", bundle=ref, entrypoint=ep,
                             sets=[ParamSet.of(p)], seeds=Seeds(count=n))
            t0 = time.perf_counter()
            sub = submit_study(client, plan, **kw)
            res = gather_study(client, sub, progress=False)
            wall = time.perf_counter() - t0
            assert res.runs == n and not res.failures, res.failures[:2]
            return wall, res, sub

        t, res, _ = study("sir", sims)
        out["modelops_first_batch_s"] = t
        study("noop", noops)
        study("noop", noops, batch=1)
        if python is not None:
            ray = RayDriver(python, slots, params, ws.root / "ray")
            out["ray_version"] = ray.hello.get("ray")
            out["ray_first_batch_s"] = ray.ask("sir", sims)["seconds"]
            ray.ask("noop", noops)

        plain_noop = _plain_noop()

        def plain(n: int) -> tuple[float, None, None]:
            r = next(counter)
            t0 = time.perf_counter()
            futures = client.map(plain_noop, [{}] * n, range(n),
                                 key=[f"plain-{r}-{i}" for i in range(n)])
            assert len(client.gather(futures)) == n
            del futures
            return time.perf_counter() - t0, None, None

        plain(noops)
        cases = ("sir", "noop auto", "noop batch=1", "plain client.map (Dask alone)")
        times: dict[str, list[float]] = {c: [] for c in cases}
        times.update({"ray sir": [], "ray noop": [], "local run (whole command)": []})
        cpu: dict[str, Any] = {}
        model: dict[str, float] = {}
        plans: dict[str, list[str]] = {c: [] for c in cases}
        digests: dict[str, str] = {}
        for _ in range(rounds):
            for case in cases:
                kind, kw = ("sir", {}) if case == "sir" else \
                    ("noop", {"batch": 1} if case == "noop batch=1" else {})
                n = sims if kind == "sir" else noops
                before = cpu_snapshot(supervisor)
                t, res, sub = plain(n) if case.startswith("plain") else study(kind, n, **kw)
                after = cpu_snapshot(supervisor)
                times[case].append(t)
                if sub is not None:
                    plans[case].append(sub.batching.describe() if sub.batching else "")
                if t <= min(times[case]):
                    cpu[case] = cpu_per_run(before, after, n)
                    if res is not None:
                        durations = [r.duration_s for s in res.sets for r in s.results.values()]
                        model[case] = sum(durations) / n
                if kind == "sir":
                    digests["modelops"] = _digest(res)
                if ray is not None and case in ("sir", "noop auto"):
                    reply = ray.ask(kind, n)
                    times[f"ray {kind}"].append(reply["seconds"])
                    if kind == "sir":
                        digests["ray"] = reply["digest"]
            t0 = time.perf_counter()
            cmd = subprocess.run([str(CLI), "local", "run", "--study", str(SIR), "--sims",
                                  str(sims), "--no-progress", "--state-dir", str(state)],
                                 capture_output=True, text=True, timeout=600, cwd=REPO)
            if cmd.returncode != 0:
                raise RuntimeError(f"local run failed:\n{cmd.stdout}\n{cmd.stderr}")
            times["local run (whole command)"].append(time.perf_counter() - t0)
        client.close()
        out["times"] = {k: v for k, v in times.items() if v}
        out["best"] = {k: min(v) for k, v in out["times"].items()}
        out["cpu_per_run"] = cpu
        out["model_or_executor_s"] = model
        out["plans"] = plans
        out["same_outputs_as_ray"] = (digests.get("ray") == digests.get("modelops")
                                      if "ray" in digests else None)
    finally:
        if ray is not None:
            ray.close()
        subprocess.run([str(CLI), "local", "down", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    out["load_at_end"] = os.getloadavg()
    return out


if __name__ == "__main__":  # quick look: python bench/steady.py [--smoke]
    import tempfile

    sys.path.insert(0, str(HERE))
    from common import Workspace

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        print(json.dumps(run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv), indent=1,
                         default=str))
