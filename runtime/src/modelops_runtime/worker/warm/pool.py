"""The warm process pool of one Dask worker process: the policy (thread-safe).

The pool decides which process serves a task and when one goes; the handle
(:class:`~.process.WarmProcess`) knows how to start, talk and stop. Each process has one
entry with an explicit :class:`State`; every change happens in :meth:`WarmPool._move`
under the one lock: (spawned) → busy ⇄ idle; (spawned) → unpooled (single-use, templates);
idle | busy | unpooled → stopping (retired, evicted, lost or shut down: counted once,
handed to the reaper); stopping → gone (only the reaper, once the process tree is gone).

A stopping process keeps its slot until it is gone (MAX_WARM_PROCESSES bounds live
processes) and stays in :meth:`pids` and in :meth:`shutdown`'s reach. Only the reaper stops
processes: a task evicting an idle process of another bundle waits for the reaper too.
Threads: the reaper (a few: one slow exit never holds another slot), the exit watch (one:
graceful stops of processes that end by themselves, finished as they exit when no task
thread did it first), the housekeeper (TTL,
deaths, exited orphans, memory budget; every second), the spawner (forks from one
long-lived thread: PR_SET_PDEATHSIG fires when the forking *thread* ends).
"""

from __future__ import annotations

import enum
import functools
import logging
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import WorkerStopping
from ..counters import RemovalReason, StatsRecorder, WarmStats
from .exits import ExitWatch
from .memory import MemorySampler, mb
from .orphans import become_subreaper, sweep
from .process import WarmProcess
from .runner.frames import NO_TEMPLATE
from .template import TemplateProcess
from .scratch import empty_dir, remove_dead_scratch
from .venvs.store import Venv

log = logging.getLogger("modelops_runtime.pool")

# stopped gently (EOF on the request pipe, TERM after a second): nothing went wrong
GRACEFUL = frozenset({RemovalReason.reuse, RemovalReason.ttl, RemovalReason.lru,
                      RemovalReason.memory_budget, RemovalReason.fresh_venv,
                      RemovalReason.venv_changed})
# worth a warning: the process failed, not the pool's policy
FAILURES = frozenset({RemovalReason.crash, RemovalReason.timeout, RemovalReason.mem_limit,
                      RemovalReason.unhealthy})
REAPER_THREADS = 4


def jittered_reuse(limit: int) -> int:
    """Up to 10% fewer tasks (never below 90% of the limit, nor 1), so a batch of processes
    spawned together does not retire together."""
    return max(1, limit - random.randint(0, limit // 10))


def jittered_ttl(seconds: float) -> float:
    """Up to 10% shorter (floor: 90% of the TTL)."""
    return seconds * (1 - 0.1 * random.random())


class State(enum.Enum):
    idle = "idle"          # warm, waiting for a task of its key
    busy = "busy"          # checked out to one task thread (health check included)
    unpooled = "unpooled"  # single-use, busy with its one task; never idle
    stopping = "stopping"  # handed to the reaper; keeps its slot until gone


_MOVES = {None: {State.busy, State.unpooled},
          State.idle: {State.busy, State.stopping},
          State.busy: {State.idle, State.stopping},
          State.unpooled: {State.stopping},
          State.stopping: set()}


_WAIT = object()  # _checkout: no slot yet


@dataclass(eq=False)
class _Entry:
    proc: Any                       # the handle: a WarmProcess (or a test's stand-in)
    state: State | None = None
    reason: RemovalReason | None = None


class WarmPool:
    """Warm processes of one Dask worker process, keyed by (bundle, venv)."""

    def __init__(self, *, max_processes: int, max_reuse: int, ttl: float,
                 memory_budget: int | None = None, stats: StatsRecorder | None = None,
                 health_timeout: float = 5.0, start_timeout: float = 120.0,
                 stop_grace: float = 5.0, housekeeping_period: float = 1.0,
                 sampler: MemorySampler | None = None) -> None:
        self.max_processes = max_processes
        self.max_reuse = max_reuse
        self.ttl = ttl
        self.memory_budget = memory_budget
        self.stats = stats or StatsRecorder()
        self.health_timeout = health_timeout
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.sampler = sampler or MemorySampler()
        self._cond = threading.Condition(threading.RLock())
        self._entries: dict[Any, _Entry] = {}
        self._idle: OrderedDict[Any, None] = OrderedDict()  # index of idle entries, LRU first
        self._reserved = 0  # slots being spawned into
        self._stopping = 0  # entries in State.stopping
        self._closed = False
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="modelops-spawn")
        self._reaper = ThreadPoolExecutor(REAPER_THREADS, thread_name_prefix="modelops-reaper")
        # graceful stops of processes that end by themselves: finished as they exit, from
        # one thread (exits.py); one alive after its TERM would be due goes to a reaper
        self._exits = ExitWatch(min(stop_grace, 1.0), on_exit=self._exited,
                                on_late=self._to_reaper, on_collect=self._collected)
        self._stop_event = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, args=(housekeeping_period,),
                                             daemon=True, name="modelops-pool-housekeeper")
        self._housekeeper.start()
        remove_dead_scratch()
        self.subreaper = become_subreaper()  # orphans stay ours (orphans.py); templates need it

    # -- the one place a process changes state ---------------------------------------------

    def _move(self, entry: _Entry, new: State, reason: RemovalReason | None = None) -> None:
        """Change ``entry``'s state (the caller holds the lock). Stopping counts the reason
        once and hands the process to the reaper."""
        if new not in _MOVES[entry.state]:  # pragma: no cover - a bug in this module
            raise AssertionError(f"warm process {entry.proc.pid}: {entry.state} → {new}")
        if entry.state is State.idle:
            del self._idle[entry.proc]
        entry.state = new
        if new is State.idle:
            self._idle[entry.proc] = None
        elif new is State.stopping:
            entry.reason = reason
            self.stats.removed(reason)
            self._stopping += 1
            if not (reason in GRACEFUL and self._watch_exit(entry.proc, entry)):
                self._to_reaper(entry)
        self._cond.notify_all()

    def _watch_exit(self, proc: Any, entry: _Entry) -> bool:
        """A graceful stop of a process that has nothing but itself to end: its request
        pipe closed now (the runner returns), its exit awaited by the exit watch, which
        finishes it (exits.py) without a reaper thread."""
        exit_fd = getattr(proc, "exit_fd", None)  # (a test's stand-in may have none)
        fd = exit_fd() if exit_fd is not None and proc.alone else None
        if fd is None:
            return False
        log_fd = proc.log.polled()  # drained by whoever waits (forked task processes)
        proc.close_requests()
        return self._exits.watch(fd, entry, None if log_fd is None else
                                 (log_fd, functools.partial(_drain, proc.log)))

    def _exited(self, entry: _Entry) -> None:
        """The exit watch (its thread, or a task thread's collect): ``entry``'s process
        exited; finish its stop here unless it started a process meanwhile (then the stop
        may wait on that: a reaper)."""
        if entry.proc.alone:
            self._reap(entry)
        else:
            self._to_reaper(entry)

    def _collected(self, entry: _Entry) -> None:
        """A task thread's collect: ``entry``'s process exited. Finished in that thread
        only if that is quick (a forked task process whose directory is empty: nothing to
        remove or renamed for the next one); else by a reaper, as the task thread's
        result waits meanwhile (a directory of many files, a warm process's caches)."""
        proc = entry.proc
        if getattr(proc, "scratch_done", None) is not None and proc.alone \
                and empty_dir(proc.scratch):
            self._reap(entry)
        else:
            self._to_reaper(entry)

    def _to_reaper(self, entry: _Entry) -> None:
        try:
            self._reaper.submit(self._reap, entry)
        except RuntimeError:  # after shutdown's deadline: a thread of its own
            threading.Thread(target=self._reap, args=(entry,), daemon=True,
                             name="modelops-late-reaper").start()

    def _reap(self, entry: _Entry) -> None:
        """Reaper thread: stop the process tree, then free its slot."""
        proc, reason = entry.proc, entry.reason
        try:
            proc.stop(graceful=reason in GRACEFUL, grace=self.stop_grace)
        except Exception:  # noqa: BLE001 - never leave a process behind
            log.exception("stopping warm process %d failed; killing it", proc.pid)
            proc.signal_group(signal.SIGKILL)
        if reason in FAILURES and not self._closed:
            log.warning("warm process %d removed (%s); a new one replaces it on demand",
                        proc.pid, reason.value)
        else:
            log.debug("warm process %d removed: %s", proc.pid, reason.value)
        with self._cond:
            del self._entries[proc]
            self._stopping -= 1
            self._cond.notify_all()  # its slot is free

    # -- spawning --------------------------------------------------------------------

    def spawn(self, *, key: Hashable, venv: Venv, bundle_dir: Path, env: dict[str, str],
              single_use: bool = False, mem_limit: int | None = None,
              template: str = NO_TEMPLATE, max_processes: int | None = None) -> WarmProcess:
        """A new warm process (not yet the pool's: :meth:`acquire` or :meth:`track_unpooled`
        takes it); with ``template`` (a module), a :class:`~.template.TemplateProcess`."""
        kind = WarmProcess if template == NO_TEMPLATE else TemplateProcess
        proc = kind.spawn(
            key=key, venv=venv, bundle_dir=bundle_dir, env=env,
            max_tasks=1 if single_use else jittered_reuse(self.max_reuse),
            ttl=jittered_ttl(self.ttl), start_timeout=self.start_timeout,
            popen=self._fork, mem_limit=mem_limit, sampler=self.sampler, template=template,
            max_processes=max_processes)
        self.stats.incr("spawns")
        return proc

    def _fork(self, fn: Callable[[], Any]) -> Any:
        try:
            future = self._spawner.submit(fn)
        except RuntimeError:  # the spawner is shut down: so is the pool
            self._check_open()
            raise
        return future.result()

    # -- checkout / checkin ----------------------------------------------------------

    def acquire(self, key: Hashable, spawn: Callable[[], Any],
                prepare: Callable[[], None] | None = None) -> tuple[Any, bool]:
        """A healthy process for ``key`` and whether it was reused. ``prepare`` (e.g. get the
        venv) runs before a new process would need a slot: if it fails, nothing was evicted
        or reserved. Waits while the pool is full of busy or stopping processes; when full,
        evicts the least recently used idle process of another key and waits for its slot."""
        prepared = prepare is None
        while True:
            with self._cond:
                while (entry := self._checkout(key, prepared)) is _WAIT:
                    self._exits.hurry()  # a stopping process's slot: finished as it exits
                    self._cond.wait()  # for a slot (an evicted process's, or any)
            if entry is None:  # no idle process: prepare outside the lock, then look again
                prepare()
                prepared = True
                continue
            if entry.state is None:  # a reserved slot
                return self._spawn_reserved(spawn), False
            reason = entry.proc.health(self.health_timeout)
            if reason is None:
                self.stats.incr("reuses")
                return entry.proc, True
            if entry.proc.worker_stopping:  # the shutdown stopped it, not a fault
                reason = RemovalReason.shutdown
            else:
                log.warning("idle warm process %d failed its health check (%s); replacing it",
                            entry.proc.pid, reason.value)
            with self._cond:
                self._move(entry, State.stopping, reason)

    def _checkout(self, key: Hashable, prepared: bool) -> _Entry | None:
        """Under the lock: an idle entry of ``key`` (now busy), a reservation (an entry
        without state), None if ``prepare`` must run first, or _WAIT for a slot."""
        self._check_open()
        now = time.monotonic()
        for proc in reversed(self._idle):  # most recently used first: warmest caches
            if proc.key == key and now < proc.expires_at:
                entry = self._entries[proc]
                self._move(entry, State.busy)
                return entry
        if not prepared:
            return None
        if self._size() < self.max_processes:
            self._reserved += 1
            return _Entry(proc=None)
        if self._idle and not self._stopping:  # else a slot is being freed already
            victim = self._entries[next(iter(self._idle))]
            self._move(victim, State.stopping, RemovalReason.lru)
        return _WAIT

    def _spawn_reserved(self, spawn: Callable[[], Any]) -> Any:
        try:
            proc = spawn()
        except BaseException:
            with self._cond:
                self._reserved -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._reserved -= 1
            entry = self._entries[proc] = _Entry(proc)
            self._move(entry, State.busy)
            if self._closed:  # shut down while it started: it never runs a task
                proc.worker_stopping = True
                self._move(entry, State.stopping, RemovalReason.shutdown)
        self._check_open()
        return proc

    def release(self, proc: Any) -> None:
        """Check a process back in after a task: keep it warm, retire it, or drop it."""
        reason = proc.lost
        if reason is None and proc.task_count >= proc.max_tasks:
            reason = RemovalReason.reuse
        elif reason is None and time.monotonic() >= proc.expires_at:
            reason = RemovalReason.ttl
        with self._cond:
            entry = self._entries[proc]
            if proc.worker_stopping or (reason is None and self._closed):
                reason = RemovalReason.shutdown
            if reason is None:
                self._move(entry, State.idle)
            else:
                self._move(entry, State.stopping, reason)
        self._exits.collect()  # earlier retirees that have exited meanwhile: finished here

    def track_unpooled(self, proc: Any) -> None:
        """A single-use process (FORCE_FRESH_VENV, or forked from a template) or a template:
        never pooled, but stopped at shutdown."""
        with self._cond:
            entry = self._entries[proc] = _Entry(proc)
            self._move(entry, State.unpooled)
            if self._closed:
                proc.worker_stopping = True
                self._move(entry, State.stopping, RemovalReason.shutdown)
        self._check_open()

    def drop_unpooled(self, proc: Any,
                      reason: RemovalReason = RemovalReason.fresh_venv) -> None:
        """Hand an unpooled process to the reaper (``reason`` unless it was lost)."""
        with self._cond:
            entry = self._entries.get(proc)
            if entry is None or entry.state is State.stopping:
                return  # taken by the shutdown already
            reason = (RemovalReason.shutdown if proc.worker_stopping
                      else proc.lost or reason)
            self._move(entry, State.stopping, reason)
        self._exits.collect()  # the last task's process, exited meanwhile: finished here

    def wait_gone(self, proc: Any, timeout: float) -> bool:
        """Wait until the reaper has finished ``proc`` (e.g. before removing its venv)."""
        self._exits.hurry()
        with self._cond:
            return self._cond.wait_for(lambda: proc not in self._entries, timeout)

    def _size(self) -> int:
        return len(self._entries) + self._reserved

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
        """Retire expired or dead idle processes, reap exited orphans, evict LRU over budget."""
        now = time.monotonic()
        with self._cond:
            for proc in list(self._idle):
                if proc.exited():
                    self._move(self._entries[proc], State.stopping, RemovalReason.crash)
                elif now >= proc.expires_at:
                    self._move(self._entries[proc], State.stopping, RemovalReason.ttl)
            procs, everyone = self._alive(), list(self._entries)
            evictable = bool(self._idle)
        sweep(everyone)  # orphans of warm processes that exited by themselves (orphans.py)
        if self.memory_budget is None or not evictable:
            return  # (no idle process: nothing to evict, no need to read every tree's PSS)
        used = self.sampler.measure(procs)
        total = sum(used.values())
        with self._cond:
            for proc in list(self._idle):  # LRU first
                if total <= self.memory_budget:
                    break
                if proc not in used:
                    continue
                log.info("pool memory %s over MODELOPS_POOL_MEMORY_BYTES=%d: evicting idle "
                         "warm process %d", mb(total), self.memory_budget, proc.pid)
                total -= used[proc]
                self._move(self._entries[proc], State.stopping, RemovalReason.memory_budget)

    # -- observability and shutdown ----------------------------------------------------

    def _alive(self, states: Iterable[State] = (State.idle, State.busy, State.unpooled)
               ) -> list[Any]:
        return [e.proc for e in self._entries.values() if e.state in states]

    def snapshot(self) -> WarmStats:
        """Counters, size and memory now. Stopping processes (exiting, slot not yet free)
        are in neither ``size`` nor ``rss_bytes``."""
        with self._cond:
            procs = self._alive()
            busy = sum(1 for p in self._alive((State.busy, State.unpooled))
                       if not isinstance(p, TemplateProcess))  # a template only forks
        return self.stats.snapshot(size=len(procs), busy=busy,
                                   rss_bytes=sum(self.sampler.measure(procs).values()))

    def pids(self) -> list[int]:
        """Every warm process the pool is responsible for, stopping ones included."""
        with self._cond:
            return [e.proc.pid for e in self._entries.values()]

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every warm process: TERM to each process group, KILL after the grace; busy
        ones are finished by their task threads (which see WorkerStopping), everything
        through the reaper. Returns once no process is left (bounded by ``timeout``)."""
        with self._cond:
            self._closed = True
            procs = [e.proc for e in self._entries.values()]
            for proc in procs:
                proc.worker_stopping = True  # before the signal: a task thread seeing the
            for proc in list(self._idle):    # death reports WorkerStopping, not a crash
                self._move(self._entries[proc], State.stopping, RemovalReason.shutdown)
        self._stop_event.set()
        for proc in procs:
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in procs:
            proc.wait_exit(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            proc.signal_group(signal.SIGKILL)
        self._exits.hurry()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._entries or self._reserved:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("warm pool shutdown: %d process(es) still not reaped after "
                              "%gs: %s", len(self._entries), timeout, sorted(self.pids()))
                    break
                self._cond.wait(left)
        self._exits.close()  # (what it still watches goes to a reaper, or a thread)
        self._reaper.shutdown(wait=False)
        self._spawner.shutdown(wait=False)
        self.sampler.close()
        if self._housekeeper is not threading.current_thread():
            self._housekeeper.join(5)


def _drain(log: Any) -> bool:
    """Read a process's output pipe (the exit watch's); False at its end."""
    log.sync()
    return log.polled() is not None


__all__ = ["WarmPool", "State", "jittered_reuse", "jittered_ttl"]
