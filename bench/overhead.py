"""Per-task overhead of a no-op entrypoint, every way a task can run, side by side.

* warm hit — IsolatedWarmExecEnv with a warm process ready (the production path)
* ProcessPoolExecutor(1) — the stdlib's round trip to one worker process
* raw pipe — one framed pickle request/reply over two pipes to a child: the floor
* direct — DirectExecEnv: in the worker process, bundle modules re-imported per task
* fresh process — MAX_PROCESS_REUSE=1: a new warm process per task
* fresh venv — FORCE_FRESH_VENV: a new venv (uv) and process per task
* bare `python -c pass` in the bundle's venv — what a fresh process is compared with
"""

from __future__ import annotations

import os
import pickle
import struct
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from common import NOOP_MODEL, Workspace, noop_call, noop_function, side_by_side

HEADER = struct.Struct(">Q")

# the child end of the raw pipe round trip: read a frame, answer with a small frame
_ECHO = r"""
import os, pickle, struct, sys
H = struct.Struct(">Q")
rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
def read(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(rfd, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf
while True:
    (n,) = H.unpack(read(H.size))
    request = pickle.loads(read(n))
    body = pickle.dumps({"ok": True, "result": {}}, protocol=5)
    os.write(wfd, H.pack(len(body)) + body)
"""


class RawPipe:
    """A child process answering framed pickles: the least any process round trip costs."""

    def __init__(self, python: str) -> None:
        req_r, self._req_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        self.proc = subprocess.Popen([python, "-I", "-c", _ECHO, str(req_r), str(resp_w)],
                                     pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL)
        os.close(req_r)
        os.close(resp_w)

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = os.read(self._resp_r, n - len(buf))
            if not chunk:
                raise RuntimeError("the echo child died")
            buf += chunk
        return buf

    def roundtrip(self, seed: int = 0) -> Any:
        body = pickle.dumps({"op": "run", "entrypoint": "model:noop", "args": ({}, seed)},
                            protocol=5)
        os.write(self._req_w, HEADER.pack(len(body)) + body)
        (n,) = HEADER.unpack(self._read(HEADER.size))
        return pickle.loads(self._read(n))

    def close(self) -> None:
        os.close(self._req_w)
        os.close(self._resp_r)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fresh_breakdown(executor, ref: str, call, *, rounds: int) -> dict[str, Any]:
    """Where a fresh process's time goes: spawn until the runner's hello, the task, and the
    retirement (graceful exit) — through the pool's own API, step by step."""
    from modelops_runtime.bundles import read_dependencies
    from modelops_runtime.worker.warm.process import warm_env

    bundle_dir = executor.bundles.path(ref)
    requirements = read_dependencies(bundle_dir)
    request = {"op": "run", "entrypoint": call.entrypoint, "args": tuple(call.args)}
    phases: dict[str, list[float]] = {"spawn": [], "task": [], "retire": []}
    clock = time.perf_counter
    for _ in range(rounds):
        t0 = clock()
        venv = executor.venvs.get(requirements)
        proc = executor.pool.spawn(key=("bench", venv.key), venv=venv, bundle_dir=bundle_dir,
                                   env=warm_env(venv, ()), single_use=True)
        t1 = clock()
        try:
            proc.run(request, timeout=None, mem_limit=None, label="bench")
            t2 = clock()
            proc.stop(graceful=True)
            t3 = clock()
        finally:
            proc.stop(graceful=False)  # no-op once stopped; a failed round's process dies
        phases["spawn"].append(t1 - t0)
        phases["task"].append(t2 - t1)
        phases["retire"].append(t3 - t2)
    return {f"{k}_s": statistics.median(v) for k, v in phases.items()}


def run(ws: Workspace, *, smoke: bool) -> dict[str, Any]:
    ref, _ = ws.bundle("noop", {"model.py": NOOP_MODEL})
    call = noop_call(ref)
    warm = ws.executor(executor_type="isolated_warm")
    fresh = ws.executor(executor_type="isolated_warm", max_process_reuse=1)
    fresh_venv = ws.executor(executor_type="isolated_warm", force_fresh_venv=True)
    direct = ws.executor(executor_type="direct")
    ppe = ProcessPoolExecutor(1)
    raw = None
    try:
        warm.run(call)  # builds the bundle's venv (shared by the other warm executors)
        venv_python = str(warm.venvs.get([]).python)
        raw = RawPipe(venv_python)
        python_pass = [venv_python, "-c", "pass"]

        def bare_python() -> None:
            subprocess.run(python_pass, check=True, stdin=subprocess.DEVNULL)

        fast = 30 if smoke else 300
        slow = 2 if smoke else 8
        cases = {
            "warm hit": lambda: warm.run(call),
            "ProcessPoolExecutor(1)": lambda: ppe.submit(noop_function, {}, 0).result(),
            "raw pipe": raw.roundtrip,
            "direct": lambda: direct.run(call),
            "fresh process": lambda: fresh.run(call),
            "bare python -c pass": bare_python,
            "fresh venv": lambda: fresh_venv.run(call),
        }
        per_round = {name: fast for name in cases}
        per_round.update({"fresh process": slow, "bare python -c pass": slow, "fresh venv": 1})
        samples = side_by_side(cases, rounds=2 if smoke else 8, per_round=per_round)
        results = {name: {"median_s": s.median, "p90_s": s.p90, "n": len(s.times)}
                   for name, s in samples.items()}
        results["warm hit"]["reused"] = warm.stats().get("reuses", 0)
        results["fresh process"]["spawns"] = fresh.stats().get("spawns", 0)
        results["fresh process breakdown"] = fresh_breakdown(fresh, ref, call,
                                                             rounds=5 if smoke else 30)
        return results
    finally:
        if raw is not None:
            raw.close()
        ppe.shutdown(wait=True, cancel_futures=True)
        for ex in (warm, fresh, fresh_venv, direct):
            ex.shutdown()


if __name__ == "__main__":  # quick look: python bench/overhead.py
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        out = run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv)
    print(json.dumps(out, indent=1))
