"""The warm process pool of one Dask worker process (thread-safe).

A :class:`WarmProcess` is ``<venv>/bin/python -I -u runner`` bound to one bundle; it
runs one task at a time. The :class:`WarmPool` hands processes to task threads
(checkout → health check → task → checkin), spawns when none is idle, evicts idle ones
LRU when full or over the memory budget, retires them after MAX_PROCESS_REUSE tasks or
PROCESS_TTL seconds (only between tasks) and kills them on crash, timeout or memory
limit. While a task runs, the waiting thread itself watches the process: deadline, RSS of
the process tree (psutil, every TICK seconds), death (pidfd / waitid).

Retiring a process after its task (reuse limit, TTL) means waiting for it to exit; the
task's result must not wait for that, so retirements go to one reaper thread. A retiring
process keeps its slot until it is gone (MAX_WARM_PROCESSES bounds live processes), and
shutdown drains the reaper.

Each process works in its own scratch directory under the worker's TMPDIR (the bundle is
only on its ``sys.path``): relative writes of model code never reach the shared bundle
cache or another process. The directory goes when the process is stopped; a worker process
removes the ones its dead predecessors on this host left behind.

A task whose process is stopped by the worker's shutdown fails with WorkerStopping, not as
a crash; a process that cannot be started fails with the real errno, blaming the venv only
when exec'ing its interpreter says so.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import WorkerStopping
from ..stats import RemovalReason, StatsRecorder, WarmStats
from .memory import _mb, rss_of_trees
from .process import WarmProcess
from .scratch import remove_dead_scratch
from .venvs import Venv

log = logging.getLogger("modelops_runtime.pool")


def jittered_reuse(limit: int) -> int:
    """Up to 10% fewer tasks (never below 90% of the limit, nor 1), so a batch of processes
    spawned together does not retire together."""
    return max(1, limit - random.randint(0, limit // 10))


def jittered_ttl(seconds: float) -> float:
    """Up to 10% shorter (floor: 90% of the TTL)."""
    return seconds * (1 - 0.1 * random.random())


class WarmPool:
    """Warm processes of one Dask worker process, keyed by (bundle, venv)."""

    def __init__(self, *, max_processes: int, max_reuse: int, ttl: float,
                 memory_budget: int | None = None, stats: StatsRecorder | None = None,
                 health_timeout: float = 5.0, start_timeout: float = 120.0,
                 stop_grace: float = 5.0, housekeeping_period: float = 1.0) -> None:
        self.max_processes = max_processes
        self.max_reuse = max_reuse
        self.ttl = ttl
        self.memory_budget = memory_budget
        self.stats = stats or StatsRecorder()
        self.health_timeout = health_timeout
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._cond = threading.Condition()
        self._idle: OrderedDict[WarmProcess, None] = OrderedDict()  # LRU first
        self._busy: set[WarmProcess] = set()
        self._unpooled: set[WarmProcess] = set()
        self._retiring: set[WarmProcess] = set()  # handed to the reaper, not gone yet
        self._reserved = 0  # slots being spawned
        self._closed = False
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="modelops-spawn")
        self._reap_queue: queue.SimpleQueue[WarmProcess | None] = queue.SimpleQueue()
        self._reaper = threading.Thread(target=self._reap, daemon=True,
                                        name="modelops-pool-reaper")
        self._reaper.start()
        self._stop_event = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, args=(housekeeping_period,),
                                             daemon=True, name="modelops-pool-housekeeper")
        self._housekeeper.start()
        remove_dead_scratch()

    # -- spawning --------------------------------------------------------------------

    def spawn(self, *, key: Hashable, venv: Venv, bundle_dir: Path, env: dict[str, str],
              single_use: bool = False) -> WarmProcess:
        proc = WarmProcess.spawn(
            key=key, venv=venv, bundle_dir=bundle_dir, env=env,
            max_tasks=1 if single_use else jittered_reuse(self.max_reuse),
            ttl=jittered_ttl(self.ttl), start_timeout=self.start_timeout,
            popen=lambda fn: self._spawner.submit(fn).result())
        self.stats.incr("spawns")
        return proc

    # -- checkout / checkin ----------------------------------------------------------

    def acquire(self, key: Hashable, spawn: Callable[[], WarmProcess]) -> tuple[WarmProcess, bool]:
        """A healthy process for ``key`` and whether it was reused. Waits while the pool is
        full of busy processes; evicts the least recently used idle process of another key
        when full; spawns (outside the lock) into a reserved slot otherwise."""
        while True:
            candidate = victim = None
            with self._cond:
                while True:
                    self._check_open()
                    candidate = self._take_idle(key)
                    if candidate is not None:
                        self._busy.add(candidate)
                        break
                    if self._size() < self.max_processes:
                        self._reserved += 1
                        break
                    if self._idle:
                        victim = next(iter(self._idle))
                        del self._idle[victim]
                        self._reserved += 1
                        break
                    self._cond.wait()
            if victim is not None:
                self._remove(victim, RemovalReason.lru)
            if candidate is None:
                return self._spawn_reserved(spawn), False
            reason = candidate.health(self.health_timeout)
            if reason is None:
                self.stats.incr("reuses")
                return candidate, True
            log.warning("idle warm process %d failed its health check (%s); replacing it",
                        candidate.pid, reason.value)
            with self._cond:
                self._busy.discard(candidate)
            self._remove(candidate, reason)

    def _take_idle(self, key: Hashable) -> WarmProcess | None:
        now = time.monotonic()
        for proc in reversed(self._idle):  # most recently used first: warmest caches
            if proc.key == key and now < proc.expires_at:
                del self._idle[proc]
                return proc
        return None

    def _spawn_reserved(self, spawn: Callable[[], WarmProcess]) -> WarmProcess:
        try:
            proc = spawn()
        except BaseException:
            with self._cond:
                self._reserved -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._reserved -= 1
            self._busy.add(proc)
            closed = self._closed
        if closed:
            self.release(proc)
            self._check_open()
        return proc

    def release(self, proc: WarmProcess) -> None:
        """Check a process back in after a task: keep it warm, retire it, or drop it."""
        reason = proc.lost
        if reason is None and proc.task_count >= proc.max_tasks:
            reason = RemovalReason.reuse
        elif reason is None and time.monotonic() >= proc.expires_at:
            reason = RemovalReason.ttl
        with self._cond:
            self._busy.discard(proc)
            if reason is None and not self._closed:
                self._idle[proc] = None
                self._cond.notify_all()
                return
        if reason in (RemovalReason.reuse, RemovalReason.ttl):
            self._retire(proc, reason)
        elif reason is None or proc.worker_stopping:  # closed meanwhile / stopped by shutdown
            proc.stop(grace=self.stop_grace)
            self.stats.removed(RemovalReason.shutdown)
        else:
            self._remove(proc, reason)

    def _retire(self, proc: WarmProcess, reason: RemovalReason) -> None:
        """Retire a healthy process that is in no set: tell it to exit and let the reaper
        wait for that, so the caller (a task's thread) returns at once. Counted now."""
        proc.close_requests()  # before the hand-over: the reaper owns it afterwards
        with self._cond:
            handed = not self._closed  # after shutdown's drain request nobody would reap it
            if handed:
                self._retiring.add(proc)
                self._reap_queue.put(proc)
        if not handed:
            self._remove(proc, reason)
            return
        self.stats.removed(reason)
        log.debug("warm process %d retired: %s", proc.pid, reason.value)

    def _reap(self) -> None:
        """The reaper thread: finish retirements in hand-over order. Each process was told
        to exit when it was handed over, so they exit concurrently and the grace periods
        run from then, not from when the reaper gets to them. None ends the thread."""
        while (proc := self._reap_queue.get()) is not None:
            try:
                proc.stop(graceful=True, grace=self.stop_grace)
            except Exception:  # noqa: BLE001 - never let the reaper die; never leave it
                log.exception("stopping retired warm process %d failed; killing it", proc.pid)
                proc.signal_group(signal.SIGKILL)
            finally:
                with self._cond:
                    self._retiring.discard(proc)
                    self._cond.notify_all()  # its slot is free

    def track_unpooled(self, proc: WarmProcess) -> None:
        """A single-use process (FORCE_FRESH_VENV): never pooled, but stopped at shutdown."""
        with self._cond:
            self._unpooled.add(proc)

    def drop_unpooled(self, proc: WarmProcess) -> None:
        with self._cond:
            self._unpooled.discard(proc)
        if proc.worker_stopping:  # stopped by shutdown: not a crash to warn about
            proc.stop(grace=self.stop_grace)
            self.stats.removed(RemovalReason.shutdown)
            return
        self._remove(proc, proc.lost or RemovalReason.fresh_venv)

    def _remove(self, proc: WarmProcess, reason: RemovalReason) -> None:
        """Stop a process that is no longer in any set, count why, free its slot."""
        proc.stop(graceful=reason in (RemovalReason.reuse, RemovalReason.ttl, RemovalReason.lru,
                                      RemovalReason.memory_budget, RemovalReason.fresh_venv),
                  grace=self.stop_grace)
        self.stats.removed(reason)
        if reason in (RemovalReason.crash, RemovalReason.timeout, RemovalReason.mem_limit,
                      RemovalReason.unhealthy) and not self._closed:
            log.warning("warm process %d removed (%s); a new one replaces it on demand",
                        proc.pid, reason.value)
        else:
            log.debug("warm process %d removed: %s", proc.pid, reason.value)
        with self._cond:
            self._cond.notify_all()

    def _size(self) -> int:
        return len(self._idle) + len(self._busy) + len(self._retiring) + self._reserved

    def _check_open(self) -> None:
        if self._closed:
            raise WorkerStopping(
                "the warm process pool is shut down: this Dask worker process is stopping "
                "and takes no new tasks. Dask normally runs the task on another worker; if "
                "this error reached you, submit it again once workers are back.", pid=None)

    # -- housekeeping ----------------------------------------------------------------

    def _housekeep(self, period: float) -> None:
        while not self._stop_event.wait(period):
            try:
                self.housekeep()
            except Exception:  # noqa: BLE001 - never let the housekeeper die silently
                log.exception("warm pool housekeeping failed")

    def housekeep(self) -> None:
        """Retire idle processes past their TTL or dead, evict LRU over the memory budget."""
        now = time.monotonic()
        doomed: list[tuple[WarmProcess, RemovalReason]] = []
        with self._cond:
            for proc in list(self._idle):
                if proc.exited():
                    doomed.append((proc, RemovalReason.crash))
                elif now >= proc.expires_at:
                    doomed.append((proc, RemovalReason.ttl))
            for proc, _ in doomed:
                del self._idle[proc]
            if self.memory_budget is not None:
                procs = list(self._idle) + list(self._busy)
        for proc, reason in doomed:
            if reason is RemovalReason.ttl:
                self._retire(proc, reason)
            else:
                self._remove(proc, reason)
        if self.memory_budget is None:
            return
        rss = rss_of_trees(procs)
        total = sum(rss.values())
        while total > self.memory_budget:
            with self._cond:
                victim = next((p for p in self._idle if p in rss), None)
                if victim is None:
                    return  # only busy processes left: they finish first
                del self._idle[victim]
            log.info("pool RSS %s over MODELOPS_POOL_MEMORY_BYTES=%d: evicting idle warm "
                     "process %d", _mb(total), self.memory_budget, victim.pid)
            total -= rss[victim]
            self._remove(victim, RemovalReason.memory_budget)

    # -- observability and shutdown ----------------------------------------------------

    def snapshot(self) -> WarmStats:
        """Counters, size and memory now. Retiring processes (exiting, slot not yet free)
        are in neither ``size`` nor ``rss_bytes``."""
        with self._cond:
            procs = list(self._idle) + list(self._busy) + list(self._unpooled)
            busy = len(self._busy) + len(self._unpooled)
        return self.stats.snapshot(size=len(procs), busy=busy,
                                   rss_bytes=sum(rss_of_trees(procs).values()))

    def pids(self) -> list[int]:
        """Every warm process the pool is responsible for, retiring ones included."""
        with self._cond:
            return [p.pid for p in (*self._idle, *self._busy, *self._unpooled,
                                    *self._retiring)]

    def shutdown(self, reaper_timeout: float = 60.0) -> None:
        """Stop every warm process: TERM to each process group, KILL after the grace; then
        wait for the reaper to have finished every retirement."""
        with self._cond:
            self._closed = True
            idle = set(self._idle)
            procs = [*self._idle, *self._busy, *self._unpooled, *self._retiring]
            self._idle.clear()
            self._cond.notify_all()
            self._reap_queue.put(None)  # after every retirement handed over (under the lock)
        self._stop_event.set()
        for proc in procs:
            proc.worker_stopping = True  # before the signal: a task thread seeing the death
        for proc in procs:               # reports WorkerStopping, not a crash
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in procs:
            proc._wait_exit(max(0.0, deadline - time.monotonic()))
        busy = []
        for proc in procs:
            if proc in idle:
                proc.stop(graceful=False)
                self.stats.removed(RemovalReason.shutdown)
            else:  # busy: its task thread sees the death, reports it and closes the pipes;
                proc.signal_group(signal.SIGKILL)  # retiring: the reaper reaps it
                busy.append(proc)
        for proc in busy:  # the task thread removes it too, but the worker may exit first
            proc._wait_exit(5.0)
            proc.remove_scratch()
        if self._reaper is not threading.current_thread():
            self._reaper.join(reaper_timeout)
            if self._reaper.is_alive():  # pragma: no cover - stop() itself is bounded
                log.error("the warm pool's reaper did not finish within %gs", reaper_timeout)
        self._spawner.shutdown(wait=False)
        if self._housekeeper is not threading.current_thread():
            self._housekeeper.join(5)
