"""Real local Dask clusters for tests: `dask scheduler` + `dask worker --preload
modelops_runtime.preload` processes on 127.0.0.1, torn down completely afterwards.

- covers: also when pytest itself ends without teardown (SIGKILL): the scheduler and each
  `dask worker` get SIGTERM from the kernel then (PR_SET_PDEATHSIG) and close as on a
  pod's stop; a SIGTERM to pytest runs the teardown (support/flags.py).
- does not: reach a worker started through ``wrap`` as another user (a change of
  credentials clears the parent-death signal); nor clusters started from a thread other
  than pytest's main one keep that (the signal comes when the starting thread ends).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
DASK = str(BIN / "dask")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def ended_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets ``sig`` when the process starting it ends, however
    it ends (None off Linux). A child whose parent is already gone exits at once. Also the
    control plane's and the registry's."""
    if _libc is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # in the child, between fork and exec
        _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return arm


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05, on_fail: Callable[[], str] | None = None):
    """Poll ``predicate`` until truthy; fail with a clear message after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ("\n" + on_fail()) if on_fail else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"({path} does not exist)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class ProcessCluster:
    """Handle on a running test cluster of `dask` subprocesses (not to be confused with
    modelops_runtime.local.cluster.supervise.LocalCluster, the code under test). Always used through the
    ``dask_cluster`` fixture or a try/finally calling :meth:`stop`, so it is torn down."""

    root: Path
    env: dict[str, str]
    scheduler: Proc | None = None
    address: str = ""
    workers: list[Proc] = field(default_factory=list)
    # every process ever seen in our trees, as psutil.Process: equality and signals use
    # pid + create time, so a pid the kernel has since handed to someone else's process is
    # never signalled (pid_max is small and the machine is shared)
    seen_procs: set[psutil.Process] = field(default_factory=set)

    @property
    def seen(self) -> set[int]:
        """Pids of every process ever seen in our trees (for assertions and diagnostics)."""
        return {p.pid for p in self.seen_procs}

    # -- start -------------------------------------------------------------------
    def start_scheduler(self) -> str:
        sched_file = self.root / "scheduler.json"
        log = self.root / "scheduler.log"
        popen = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file),
             "--no-show"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True, preexec_fn=ended_with_this_process())
        self.scheduler = Proc("scheduler", popen, log)
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0
                 or popen.poll() is not None, 60, "the scheduler to write its address",
                 on_fail=lambda: tail(log))
        if popen.poll() is not None:
            raise AssertionError(f"dask scheduler exited with {popen.returncode}:\n{tail(log)}")
        self.address = json.loads(sched_file.read_text())["address"]
        return self.address

    def start_worker(self, *, nworkers: int = 1, nthreads: int = 1,
                     env: Mapping[str, str] | None = None,
                     resources: str = "aggregation=1", extra_args: Iterable[str] = (),
                     preload: bool = True, name: str | None = None,
                     wrap: Iterable[str] = ()) -> Proc:
        """Start one `dask worker` command (``nworkers`` processes under a nanny), with the
        modelops preload on the workers and the nannies as the chart renders it. ``wrap``:
        a command prefix (e.g. ``setpriv --reuid …`` to run it as another uid)."""
        idx = len(self.workers)
        log = self.root / f"worker-{idx}.log"
        args = [*wrap, DASK, "worker", self.address, "--nworkers", str(nworkers),
                "--nthreads", str(nthreads), "--memory-limit", "0",
                "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                "--local-directory", str(self.root / f"dask-worker-space-{idx}"),
                "--name", name or f"w{idx}", "--death-timeout", "60"]
        if resources:
            args += ["--resources", resources]
        if preload:
            args += ["--preload", "modelops_runtime.preload",
                     "--preload-nanny", "modelops_runtime.preload"]
        args += list(extra_args)
        full_env = {**self.env, **(env or {})}
        popen = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                 env=full_env, start_new_session=True,
                                 preexec_fn=ended_with_this_process())
        proc = Proc(f"worker-{idx}", popen, log)
        self.workers.append(proc)
        return proc

    def client(self, **kwargs):
        from distributed import Client

        return Client(self.address, timeout=30, **kwargs)

    def wait_for_workers(self, client, n: int, timeout: float = 90) -> None:
        wait_for(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) >= n
                 or any(w.popen.poll() is not None for w in self.workers),
                 timeout, f"{n} worker processes to connect", interval=0.1,
                 on_fail=self.logs)
        dead = [w for w in self.workers if w.popen.poll() is not None]
        if dead:
            raise AssertionError(f"{dead[0].name} exited with {dead[0].popen.returncode}:\n"
                                 + tail(dead[0].log))

    # -- inspection ----------------------------------------------------------------
    def logs(self) -> str:
        parts = []
        for p in ([self.scheduler] if self.scheduler else []) + self.workers:
            parts.append(f"--- {p.name} ({p.log}) ---\n{tail(p.log)}")
        return "\n".join(parts)

    def tree_pids(self) -> set[int]:
        """All live pids in our process trees (nannies, worker processes, warm processes)."""
        found: set[psutil.Process] = set()
        for p in ([self.scheduler] if self.scheduler else []) + self.workers:
            if p.popen.returncode is not None:
                continue  # reaped: its pid may already belong to another process
            try:
                root = psutil.Process(p.popen.pid)
                found.add(root)
                found.update(root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        self.seen_procs |= found
        return {proc.pid for proc in found}

    # -- stop --------------------------------------------------------------------
    def stop(self, grace: float = 15) -> list[int]:
        """Stop every process we started, and everything they started. Returns pids that
        were still alive and needed SIGKILL after the grace period (for diagnostics).

        Leaders are reaped only at the very end: until then each leader's pid, and so its
        process group id, is still ours, and ``killpg`` cannot reach anyone else's
        processes. Everything else is signalled through the psutil.Process objects
        recorded while it ran, which refuse a pid the kernel has since reused."""
        self.tree_pids()
        procs = self.workers + ([self.scheduler] if self.scheduler else [])
        for p in procs:
            _signal_group(p.popen, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not all(_exited(p.popen) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = []
        for proc in sorted(self.seen_procs, key=lambda proc: proc.pid):
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()  # NoSuchProcess if the pid now names another process
                    killed.append(proc.pid)
            except psutil.NoSuchProcess:
                pass
        for p in procs:  # stragglers never seen in a tree, also of leaders that did exit
            _signal_group(p.popen, signal.SIGKILL)
        for p in procs:
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return killed


def _exited(popen: subprocess.Popen) -> bool:
    """Whether ``popen`` has exited, without reaping it (a zombie keeps its pid ours)."""
    if popen.returncode is not None:
        return True
    try:
        return psutil.Process(popen.pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    """Signal the process group ``popen`` leads (it was started with start_new_session),
    only while the leader is unreaped, i.e. while its pid cannot have been reused."""
    if popen.returncode is not None:
        return
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def direct_env(repo: Path) -> dict[str, str]:
    """Worker settings of the executor ``direct`` on the bundle repository ``repo``."""
    return {"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLE_REPO": str(repo)}


def base_env(root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for cluster processes: ours minus MODELOPS_*, caches and TMPDIR under
    ``root`` (a pod's /tmp is its own: a worker killed before its exit hooks leaves its
    metrics files there, as it would in the pod's emptyDir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    env.update({
        "MODELOPS_BUNDLE_CACHE_DIR": str(root / "bundles"),
        "MODELOPS_VENVS_DIR": str(root / "venvs"),
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(root / "tmp"),
    })
    env.update(extra or {})
    return env
