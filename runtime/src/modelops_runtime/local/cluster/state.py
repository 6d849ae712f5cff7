"""The record of a local cluster kept up in the background (``local up``): one per state dir.

- covers: ``<state>/cluster.json`` (address, launch plan file, run dir, every process of
  the cluster by pid and start time) and ``<state>/cluster.lock``, an exclusive ``flock``
  its supervisor holds for its whole life: the kernel drops it when the supervisor ends in
  any way (``local down``, a crash, SIGKILL, a reboot), so a record whose lock is free is
  stale, and :func:`clear_stale` kills what it lists and removes it.
- does not: start or stop a cluster (background.py, supervise.py).
- see also: docs/design.md "Local mode" (a cluster that stays up).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field

STATE_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"


class ClusterState(BaseModel):
    """What ``local up`` leaves for ``local run``, ``status`` and ``down``."""

    model_config = ConfigDict(frozen=True)

    status: str                       # "starting", then "up"
    supervisor_pid: int
    launch_file: Path                 # the LaunchPlan as JSON (launch.py)
    run_dir: Path
    log: Path                         # the supervisor's own output
    started: float                    # time.time() when `up` began
    address: str = ""
    dashboard: str = ""
    values: list[str] = Field(default_factory=list)
    sets: list[str] = Field(default_factory=list)
    procs: dict[int, float] = Field(default_factory=dict)  # pid → create_time, all of them


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: Path) -> ClusterState | None:
    """The record, or None when there is none (or it is unreadable: half written)."""
    try:
        return ClusterState.model_validate_json(state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None


def write_private(target: Path, text: str) -> None:
    """Replace ``target`` atomically (a reader never sees half of it), readable by its
    owner only (a launch plan holds the environment the cluster's processes got)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, target)


def write_state(state_dir: Path, state: ClusterState) -> None:
    write_private(state_file(state_dir), state.model_dump_json(indent=1))


def take_lock(state_dir: Path) -> int | None:
    """The supervisor's lock: an open fd holding ``flock(LOCK_EX)`` on ``cluster.lock``
    (closed only when the supervisor ends), or None if another process holds it."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_held(state_dir: Path) -> bool:
    """A supervisor is alive for this state dir (it holds the lock)."""
    if not (Path(state_dir) / LOCK_FILE).exists():
        return False
    fd = take_lock(state_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def alive(procs: dict[int, float]) -> list[psutil.Process]:
    """The recorded processes still running: the same pid *and* start time (after a reboot,
    or once a pid is reused, none is)."""
    out = []
    for pid, created in procs.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(int(pid))
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def clear_stale(state_dir: Path) -> ClusterState | None:
    """If the record's supervisor is gone (its lock is free), kill every process it lists
    that still runs, remove the run's scratch and the record; returns the stale record
    (None: nothing stale). Safe against a supervisor starting meanwhile: the lock is held
    while clearing."""
    fd = take_lock(state_dir)
    if fd is None:
        return None
    try:
        state = read_state(state_dir)
        if state is None:
            with contextlib.suppress(FileNotFoundError):
                state_file(state_dir).unlink()
            return None
        left = alive({**state.procs, state.supervisor_pid: _created(state)})
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=10)
        for d in (state.run_dir / "tmp", state.run_dir / "dask"):
            shutil.rmtree(d, ignore_errors=True)
        state_file(state_dir).unlink(missing_ok=True)
        return state
    finally:
        os.close(fd)


def _created(state: ClusterState) -> float:
    """The supervisor's start time as recorded (it records itself in ``procs``), else a
    time no process has (so a reused pid is never killed)."""
    return state.procs.get(state.supervisor_pid, -1.0)


def wait_released(state_dir: Path, timeout: float) -> bool:
    """Until no supervisor holds the lock, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_held(state_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
