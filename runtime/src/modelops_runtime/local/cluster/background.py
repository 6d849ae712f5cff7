"""A local cluster kept up in the background: ``local up`` starts a supervisor, ``local
down`` stops it.

- covers: the supervisor (``python -m modelops_runtime.local.cluster.background PLAN``):
  holds the state dir's lock, runs :class:`~.supervise.LocalCluster` as ``local --keep``
  does, records the cluster in ``cluster.json`` (state.py) and tears everything down on
  SIGTERM, on a cluster process exiting, or when the ``up`` that started it ends before
  handing over (its stdin pipe closes: a killed ``up`` leaves nothing behind);
  :func:`start` (the ``up`` side: spawn, wait until up, hand over) and :func:`stop`.
- does not: render or plan (launch.py), run studies (local/study/session.py).
- see also: docs/design.md "Local mode".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ...errors import LocalModeError
from ..console import Echo
from .launch import LaunchPlan
from .state import (ClusterState, clear_stale, read_state, state_file, take_lock,
                    wait_released, write_private, write_state)
from .stopping import sigterm_as_interrupt
from .supervise import LocalCluster

HANDOVER = b"detach\n"     # `up` → supervisor: the cluster is the user's now
STOP_GRACE = 20.0          # s for the cluster to stop before SIGKILL (supervise.py's)


def launch_file(plan: LaunchPlan) -> Path:
    return plan.run_dir / "launch.json"


# -- the `up` side ---------------------------------------------------------------------


def start(plan: LaunchPlan, *, start_timeout: float, values: list[str], sets: list[str],
          echo: Echo) -> ClusterState:
    """Start the supervisor of ``plan`` and wait until its cluster is up, then hand the
    cluster over (it stays up after this process ends). Ctrl-C/SIGTERM while waiting, a
    failed start or a timeout stop it again; a SIGKILL of this process does too (the
    supervisor sees its stdin close before the handover)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_private(launch_file(plan), plan.model_dump_json())  # the processes' environments
    log = plan.run_dir / "logs" / "cluster.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", __name__, str(launch_file(plan)), "--start-timeout",
            str(start_timeout), "--started", repr(time.time())]
    for v in values:
        argv += ["--value", v]
    for s in sets:
        argv += ["--set", s]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout + 30
        while True:
            state = read_state(plan.state_dir)
            if state is not None and state.supervisor_pid == proc.pid and state.status == "up":
                break
            if proc.poll() is not None:
                raise LocalModeError(f"the local cluster did not start (its supervisor "
                                     f"exited with code {proc.returncode}); its log ({log}):\n"
                                     f"{_tail(log)}")
            if time.monotonic() > deadline:
                raise LocalModeError(f"the local cluster was not up within "
                                     f"{start_timeout + 30:.0f}s; its log ({log}):\n{_tail(log)}")
            time.sleep(0.1)
        proc.stdin.write(HANDOVER)
        proc.stdin.close()
        return state
    except BaseException:
        _end(proc)
        raise


def _end(proc: subprocess.Popen) -> None:
    """Stop a supervisor we started and are still attached to (it stops its cluster)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def stop(state_dir: Path, state: ClusterState, *, timeout: float = STOP_GRACE + 30) -> bool:
    """``local down``: SIGTERM to the supervisor, which stops its cluster; if it has not
    let go of the lock within ``timeout``, SIGKILL it and clear what it left. True when it
    stopped by itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    if wait_released(state_dir, timeout):
        clear_stale(state_dir)  # nothing, normally: the supervisor removed its record
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGKILL)
    wait_released(state_dir, 10)
    clear_stale(state_dir)
    return False


def _tail(path: Path, n: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return f"({path} was not written)"


# -- the supervisor ----------------------------------------------------------------------


def _watch_handover(stdin) -> None:
    """Until the handover line: EOF first means `up` ended (killed): stop everything."""
    line = stdin.readline()
    if line != HANDOVER:
        os.kill(os.getpid(), signal.SIGTERM)


def serve(plan_path: Path, *, start_timeout: float, started: float, values: list[str],
          sets: list[str]) -> int:
    def echo(msg: str) -> None:
        print(msg, flush=True)

    restore = sigterm_as_interrupt()
    plan = LaunchPlan.model_validate_json(Path(plan_path).read_text())
    lock = take_lock(plan.state_dir)
    if lock is None:
        echo(f"error: another local cluster is up in {plan.state_dir} (`modelops-runtime "
             "local status`)")
        return 1
    me = os.getpid()
    state = ClusterState(status="starting", supervisor_pid=me, launch_file=Path(plan_path),
                         run_dir=plan.run_dir, log=plan.run_dir / "logs" / "cluster.log",
                         started=started, values=values, sets=sets,
                         procs={me: _create_time(me)})
    try:
        write_state(plan.state_dir, state)
        threading.Thread(target=_watch_handover, args=(sys.stdin.buffer,), daemon=True).start()
        with LocalCluster(plan, echo, start_timeout=start_timeout) as cluster:
            client = cluster.client(set_as_default=False)  # closed when the cluster stops
            state = state.model_copy(update={
                "status": "up", "address": cluster.address,
                "dashboard": client.dashboard_link or "",
                "procs": {**cluster.processes(), me: state.procs[me]}})
            write_state(plan.state_dir, state)
            echo(f"cluster up: {cluster.address} (supervisor pid {me})")
            while True:  # every process is recorded, for clear_stale after a crash
                procs = {**cluster.processes(), me: state.procs[me]}
                if procs != state.procs:
                    state = state.model_copy(update={"procs": procs})
                    write_state(plan.state_dir, state)
                cluster.check_running()
                time.sleep(0.5)
    except KeyboardInterrupt:
        echo("stopped: every local process is gone")
        return 0
    except LocalModeError as exc:
        echo(f"error: {exc}")
        return 1
    finally:
        state_file(plan.state_dir).unlink(missing_ok=True)
        os.close(lock)
        restore()


def _create_time(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="modelops-runtime local (supervisor)")
    p.add_argument("plan", type=Path)
    p.add_argument("--start-timeout", type=float, default=180)
    p.add_argument("--started", type=float, default=0.0)
    p.add_argument("--value", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args(argv)
    return serve(a.plan, start_timeout=a.start_timeout, started=a.started or time.time(),
                 values=a.value, sets=a.set)


if __name__ == "__main__":
    sys.exit(main())
