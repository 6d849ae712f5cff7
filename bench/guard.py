"""What the confinement of issue #24 costs, each part side by side with the same work
unconfined, in one run (runs alone: ``.venv/bin/python bench/guard.py``).

* start: what a warm process pays once per start (so a fresh process once per task):
  installing the signal guard (seccomp filter, listener handed to the worker), and the
  Landlock sandbox handling writes only (as before) vs writes and reads (now)
* fork: ``os.fork()`` + exit + wait in a guarded process (each fork asked of the worker's
  guard thread, which counts the tree) vs an unguarded one
* signal: ``kill(child, SIGCONT)`` guarded (asked) vs unguarded
* end of task: the worker ending a task's descendants when there are none (every task
  pays it) — the /proc reads of ``WarmProcess.end_descendants``
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "runtime" / "src"))

from modelops_runtime.worker.warm.guard import GUARD, receive_listener  # noqa: E402
from modelops_runtime.worker.warm.orphans import adopted_descendants  # noqa: E402
from modelops_runtime.worker.warm.memory import tree_pids  # noqa: E402
from modelops_runtime.worker.warm.runner import program  # noqa: E402

# the measured child: loads frames and confine as the runner does, then times its parts
CHILD = r"""
import ctypes, importlib.util, json, os, signal, sys, time  # ctypes: the runner has it
here = sys.argv[1]
def load(name, **extra):
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__dict__.update(extra)
    return module
frames = load("frames")
confine = load("confine", frames=frames)
mode, sock, rounds, scratch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
out = {}
started = time.perf_counter()
if mode == "guarded":
    out["why"] = confine.guard_signals(sock, subreaper=True)
else:
    os.close(sock)
out["guard_s"] = time.perf_counter() - started
started = time.perf_counter()
if mode == "reads":
    out["why"] = confine.sandbox((scratch, "/dev"), confine.readable_roots(scratch, here))
elif mode == "writes":
    out["why"] = confine.sandbox((scratch, "/dev"))
out["sandbox_s"] = time.perf_counter() - started
forks = []
for _ in range(rounds):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    forks.append(time.perf_counter() - t)
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
kills = []
for _ in range(rounds):
    t = time.perf_counter()
    os.kill(pid, signal.SIGCONT)
    kills.append(time.perf_counter() - t)
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
out["fork_s"], out["kill_s"] = forks, kills
print(json.dumps(out))
"""


def _child(mode: str, rounds: int, scratch: str) -> dict:
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", CHILD, str(program.SOURCE), mode, str(theirs.fileno()),
         str(rounds), scratch], pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE,
        text=True)
    theirs.close()
    guarded = None
    if mode == "guarded":
        ours.settimeout(30)
        ours.setblocking(True)
        deadline = time.monotonic() + 30
        listener = None
        while listener is None and time.monotonic() < deadline and proc.poll() is None:
            listener = receive_listener(ours)
            time.sleep(0.001)
        guarded = GUARD.add(proc.pid, "", listener, 10_000) if listener is not None else None
    out, _ = proc.communicate(timeout=300)
    ours.close()
    if guarded is not None:
        GUARD.remove(guarded)
    result = json.loads(out)
    if result.get("why"):
        raise SystemExit(f"{mode}: not confined: {result['why']}")
    return result


def _us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def run(rounds: int = 300, starts: int = 15) -> dict:
    scratch = tempfile.mkdtemp(prefix="bench-guard-")
    try:
        results = {}
        for mode in ("plain", "guarded", "writes", "reads"):
            runs = [_child(mode, rounds if i == 0 else 1, scratch) for i in range(starts)]
            results[mode] = {
                "guard_us": _us([r["guard_s"] for r in runs]),
                "sandbox_us": _us([r["sandbox_s"] for r in runs]),
                "fork_us": _us(runs[0]["fork_s"]), "kill_us": _us(runs[0]["kill_s"])}
        me = os.getpid()
        ends = []
        for _ in range(rounds):
            t = time.perf_counter()
            tree_pids(me)
            adopted_descendants("no-such-token", owner=me)
            ends.append(time.perf_counter() - t)
        results["end_of_task_us"] = _us(ends)
        return results
    finally:
        os.rmdir(scratch)


def main() -> None:
    r = run()
    plain, guarded = r["plain"], r["guarded"]
    print("| what | confined | unconfined | ratio |")
    print("|---|---|---|---|")
    print(f"| start: signal guard installed | {guarded['guard_us']:.0f} µs | "
          f"{plain['guard_us']:.0f} µs | |")
    print(f"| start: Landlock, writes and reads vs writes only | {r['reads']['sandbox_us']:.0f} µs"
          f" | {r['writes']['sandbox_us']:.0f} µs | "
          f"{r['reads']['sandbox_us'] / r['writes']['sandbox_us']:.2f}x |")
    print(f"| fork + exit + wait | {guarded['fork_us']:.0f} µs | {plain['fork_us']:.0f} µs | "
          f"{guarded['fork_us'] / plain['fork_us']:.2f}x |")
    print(f"| kill(child, SIGCONT) | {guarded['kill_us']:.1f} µs | {plain['kill_us']:.1f} µs | "
          f"{guarded['kill_us'] / plain['kill_us']:.1f}x |")
    print(f"| end of a task without descendants (worker side) | {r['end_of_task_us']:.0f} µs | "
          "0 | |")


if __name__ == "__main__":
    main()
