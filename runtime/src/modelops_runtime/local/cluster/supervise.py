"""Supervision of the local cluster's processes: start the planned scheduler and
workers in their own sessions, track every descendant by pid and start time, and stop
them all on success, failure, Ctrl-C or SIGTERM: no process outlives a run."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from ...errors import LocalModeError
from ...worker.warm.memory import tree_pids
from ..console import Echo, echo
from .launch import KEEP_RUNS, SCHEDULER_TOKEN, LaunchPlan, ProcessSpec
from .state import read_state

def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} was not written)"
    return "\n".join(lines[-n:])


class ProcessRecord:
    """Every process ever seen in some process trees, by pid *and* start time (pids are
    reused): a descendant whose parent was killed is in no tree any more, but is still
    found here. Thread-safe: a sampling thread records while another one stops."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}   # pid → create_time
        self._lock = threading.Lock()

    def add_tree(self, pid: int, *, include_root: bool = True) -> None:
        """Record the live descendants of ``pid`` (and ``pid`` itself, by default). The
        tree is read from its members' /proc children lists (as many reads as members,
        where psutil's ``children`` reads every process of the host); a pid recorded
        already keeps the start time it was recorded with, so it is not read again."""
        members = tree_pids(pid)
        if not include_root:
            members = members[1:]
        with self._lock:
            new = [member for member in members if member not in self._seen]
        for member in new:
            with contextlib.suppress(psutil.Error):
                created = psutil.Process(member).create_time()
                with self._lock:
                    self._seen.setdefault(member, created)

    def seen(self) -> dict[int, float]:
        with self._lock:
            return dict(self._seen)

    def alive(self) -> list[psutil.Process]:
        """Recorded processes that still run (same pid and start time, not a zombie)."""
        out = []
        for pid, created in self.seen().items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def wait_gone(self, timeout: float) -> None:
        """Until every recorded process has exited, for at most ``timeout``: a child of
        ours is reaped; another's exit is read from a pidfd, which is readable once the
        process has ended -- an orphan's zombie waits for init, which may reap it only
        a second later (this VM's init does), and has nothing left to stop."""
        deadline = time.monotonic() + timeout
        for pid, created in self.seen().items():
            with contextlib.suppress(psutil.Error, OSError):
                proc = psutil.Process(pid)
                if proc.ppid() == os.getpid():
                    if proc.create_time() == created:
                        proc.wait(max(0.1, deadline - time.monotonic()))
                    continue
                pidfd = os.pidfd_open(pid)
                try:
                    if proc.create_time() == created:  # the pidfd is of that process
                        select.select([pidfd], [], [], max(0.1, deadline - time.monotonic()))
                finally:
                    os.close(pidfd)


class StartStop:
    """A context manager over ``start()`` and ``stop()``: entering starts (a start that fails
    stops what it had started, then raises), leaving stops (also tests/support's)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate_groups(popens: Sequence[subprocess.Popen], grace: float) -> list[subprocess.Popen]:
    """SIGTERM each command (its main process only, as Kubernetes stops a container: it closes
    what it started itself), SIGKILL each one's process group (started with
    start_new_session) after ``grace`` s for all, reap; returns those that needed SIGKILL."""
    for p in popens:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in popens:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    forced = [p for p in popens if p.poll() is None]
    for p in popens:
        _killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)
    return forced


class _Started:
    def __init__(self, spec: ProcessSpec, popen: subprocess.Popen) -> None:
        self.spec = spec
        self.popen = popen


class LocalCluster(StartStop):
    """The running local cluster of one :class:`LaunchPlan`. Use as a context manager:
    leaving it (normally, by an exception or by KeyboardInterrupt) stops every process
    it started and every process those started."""

    def __init__(self, plan: LaunchPlan, echo: Echo = echo, start_timeout: float = 180) -> None:
        self.plan = plan
        self.echo = echo
        self.start_timeout = start_timeout
        self.address = ""
        self.scheduler: _Started | None = None
        self.workers: list[_Started] = []
        self._procs = ProcessRecord()         # every process of our trees
        self._stop_tracking = threading.Event()
        self._tracker: threading.Thread | None = None
        self._clients: list[Any] = []
        self._stopped = False

    # -- start -----------------------------------------------------------------------
    def _spawn(self, spec: ProcessSpec, argv: list[str]) -> _Started:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        # a Ctrl-C between fork and recording the pid would leave a process nobody knows
        with _interrupts_deferred(), spec.log.open("wb") as log:
            popen = subprocess.Popen(argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            self._procs.add_tree(popen.pid)
            started = _Started(spec, popen)
            if spec is self.plan.scheduler:
                self.scheduler = started
            else:
                self.workers.append(started)
        return started

    def start(self, timeout: float | None = None) -> None:
        timeout = self.start_timeout if timeout is None else timeout
        p = self.plan
        for d in (p.run_dir, p.bundle_repo, p.state_dir / "volumes"):
            if isinstance(d, Path):  # not a URL repository (s3://...)
                d.mkdir(parents=True, exist_ok=True)
        # every emptyDir a container mounts exists, as in a pod (worker.extraVolumes too)
        for c in (p.rendered.scheduler, p.rendered.worker):
            for name in c.empty_dirs:
                (p.state_dir / "volumes" / name).mkdir(exist_ok=True)
        for spec in p.workers:
            Path(spec.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        self._tracker = threading.Thread(target=self._track_loop, name="localmode-pids",
                                         daemon=True)
        self._tracker.start()

        self._spawn(p.scheduler, p.scheduler.argv)
        deadline = time.monotonic() + timeout
        while not (p.scheduler_file.exists() and p.scheduler_file.stat().st_size > 0):
            self._check_exited([self.scheduler], " during startup")
            if time.monotonic() > deadline:
                raise LocalModeError(
                    f"the scheduler did not start within {timeout:.0f}s; its log "
                    f"({p.scheduler.log}):\n{_tail(p.scheduler.log)}")
            time.sleep(0.1)
        self.address = self._read_address(deadline)

        for spec in p.workers:
            argv = [self.address if a == SCHEDULER_TOKEN else a for a in spec.argv]
            self._spawn(spec, argv)
        self.wait_for_workers(p.expected_workers, timeout=max(10.0, deadline - time.monotonic()))

    def _read_address(self, deadline: float) -> str:
        while True:   # the file may be caught half-written
            with contextlib.suppress(ValueError, KeyError):
                return json.loads(self.plan.scheduler_file.read_text())["address"]
            if time.monotonic() > deadline:
                raise LocalModeError(f"unreadable scheduler file {self.plan.scheduler_file}")
            time.sleep(0.1)

    def client(self, **kwargs: Any):
        """A new :class:`distributed.Client` on the local scheduler (closed at stop)."""
        from distributed import Client

        c = Client(self.address, timeout=60, **kwargs)
        self._clients.append(c)
        return c

    def wait_for_workers(self, n: int, timeout: float = 180) -> None:
        """Until ``n`` worker processes are connected; a process that exits meanwhile fails
        the wait with its log."""
        client = self.client(set_as_default=False)
        deadline = time.monotonic() + timeout
        try:
            while True:
                connected = len(client.scheduler_info(n_workers=-1)["workers"])
                if connected >= n:
                    return
                self._check_exited([self.scheduler, *self.workers], " during startup")
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {w.spec.name} ({w.spec.log}) ---\n{_tail(w.spec.log, 20)}"
                                     for w in self.workers)
                    raise LocalModeError(
                        f"only {connected} of {n} Dask worker processes connected within "
                        f"{timeout:.0f}s; the machine may be overloaded (retry with a larger "
                        f"--start-timeout) or a worker failed:\n{logs}")
                time.sleep(0.2)
        finally:
            self._close_client(client)

    def _close_client(self, client) -> None:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        with contextlib.suppress(ValueError):
            self._clients.remove(client)

    # -- inspection ------------------------------------------------------------------
    @property
    def started(self) -> list[_Started]:
        return ([self.scheduler] if self.scheduler else []) + self.workers

    def _track(self) -> None:
        """Record every live process of our trees (so orphans can still be found)."""
        for s in self.started:
            self._procs.add_tree(s.popen.pid)

    def _track_loop(self) -> None:
        while not self._stop_tracking.wait(0.25):
            with contextlib.suppress(Exception):
                self._track()

    def pids(self) -> set[int]:
        """Every pid our processes have had so far (scheduler, nannies, worker processes,
        warm processes)."""
        self._track()
        return set(self._procs.seen())

    def processes(self) -> dict[int, float]:
        """Every process our commands have had so far: pid → start time."""
        self._track()
        return self._procs.seen()

    def alive(self) -> list[psutil.Process]:
        """Processes we started (directly or not) that are still running."""
        self._track()
        return self._procs.alive()

    def check_running(self) -> None:
        """Raise if the scheduler or a worker command has exited."""
        self._check_exited(self.started)

    @staticmethod
    def _check_exited(procs: Sequence[_Started], when: str = "") -> None:
        for s in procs:
            code = s.popen.poll()
            if code is not None:
                raise LocalModeError(
                    f"the local {s.spec.name} exited with code {code}{when}; its log "
                    f"({s.spec.log}):\n{_tail(s.spec.log)}")

    # -- stop ------------------------------------------------------------------------
    def stop(self, grace: float = 20) -> None:
        """Stop everything: clients, workers (graceful, then SIGKILL), scheduler, and any
        process of our trees still alive; then remove the run's scratch directories."""
        if self._stopped:
            return
        self._stopped = True
        with _interrupts_deferred():
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        for c in list(self._clients):
            self._close_client(c)
        with contextlib.suppress(Exception):
            self._track()
        forced = self._terminate(self.workers, grace)
        forced += self._terminate([self.scheduler] if self.scheduler else [], grace)
        self._stop_tracking.set()
        if self._tracker is not None:
            self._tracker.join(5)
        orphans = self.alive()   # e.g. warm processes of a worker process that was killed
        for proc in orphans:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if forced or orphans:
            self.echo(f"notice: killed {', '.join(forced) or 'no local command'} after "
                      f"{grace:.0f}s without stopping, and {len(orphans)} orphaned process(es)")
        self._procs.wait_gone(10)
        for d in (self.plan.run_dir / "tmp", self.plan.run_dir / "dask"):
            shutil.rmtree(d, ignore_errors=True)
        busy = read_state(self.plan.state_dir)  # a cluster kept up (`local up`) keeps its run
        _prune_runs(self.plan.state_dir / "runs", keep=KEEP_RUNS,
                    busy=busy.run_dir if busy is not None else None)

    @staticmethod
    def _terminate(procs: Sequence[_Started], grace: float) -> list[str]:
        """Graceful close (`dask worker` closes its worker processes, which clean up after
        themselves), then SIGKILL; returns the names of the commands that needed SIGKILL."""
        forced = terminate_groups([s.popen for s in procs], grace)
        return [s.spec.name for s in procs if s.popen in forced]


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) during teardown must not leave processes behind: hold
    both signals until every process is gone, then re-raise the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _prune_runs(runs: Path, keep: int, busy: Path | None = None) -> None:
    """Keep the logs of the last ``keep`` runs; never touch a run whose CLI is alive, nor
    ``busy`` (the run dir of a cluster kept up)."""
    if not runs.is_dir():
        return
    dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for d in dirs[:-keep]:
        if busy is not None and d == busy:
            continue
        owner = d.name.rsplit("-", 1)[-1]
        if owner.isdigit() and psutil.pid_exists(int(owner)):
            continue
        shutil.rmtree(d, ignore_errors=True)
