"""Memory of warm process trees: one sampler for the whole pool.

A tree's memory is the sum over the process and its descendants of PSS (proportional set
size: a page shared by n processes counts 1/n in each, so copy-on-write pages of forked
children are counted once), or RSS where PSS cannot be read. Descendants are found from
``/proc/<pid>/task/<tid>/children`` (cost proportional to the tree, not to the host's
process table), or from one pass over the process table where the kernel lacks it.

:class:`MemorySampler` is one thread per pool: while any task runs with a memory limit it
samples every watched tree every MEM_SAMPLE seconds; a tree over its limit gets its
``memory_exceeded`` set (the peak) and is killed, and the task thread watching the process
reports MemoryLimitExceeded. Spikes shorter than a sample are caught by the runner's own
hard cap (RLIMIT_DATA, see confine.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

import psutil

MEM_SAMPLE = 0.1  # s between samples of the watched (busy, limited) trees

P = TypeVar("P")  # a warm process: anything with ``pid``


def children(pid: int) -> list[int] | None:
    """Direct children from /proc (None if this kernel does not list them)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []  # gone
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None  # CONFIG_PROC_CHILDREN is off
        except OSError:
            continue
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    found, stack = [], [pid]
    while stack:
        member = stack.pop()
        found.append(member)
        kids = children(member)
        if kids is None:  # no /proc children lists: psutil's scan of the process table
            try:
                return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
            except psutil.Error:
                return found
        stack.extend(kids)
    return found


def process_memory(pid: int) -> int:
    """PSS of one process (RSS if PSS is unavailable); 0 if it is gone."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return 0
    try:
        return proc.memory_full_info().pss
    except (psutil.AccessDenied, AttributeError, NotImplementedError):
        pass
    except psutil.Error:
        return 0
    with contextlib.suppress(psutil.Error):
        return proc.memory_info().rss
    return 0


def tree_memory(pid: int) -> int:
    return sum(process_memory(p) for p in tree_pids(pid))


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


class _Watched:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.peak = 0


class MemorySampler:
    """Samples the watched process trees of one pool from one thread."""

    def __init__(self, period: float = MEM_SAMPLE) -> None:
        self.period = period
        self._cond = threading.Condition()
        self._watched: dict[Any, _Watched] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    def measure(self, procs: Iterable[P]) -> dict[P, int]:
        """Memory of each process's tree now (for snapshots and the pool's budget)."""
        return {proc: tree_memory(proc.pid) for proc in procs}

    def watch(self, proc: Any, limit: int) -> None:
        """Sample ``proc``'s tree until :meth:`unwatch`; over ``limit``: set
        ``proc.memory_exceeded`` to the peak, then ``proc.kill()``."""
        with self._cond:
            self._watched[proc] = _Watched(limit)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="modelops-memory-sampler")
                self._thread.start()
            self._cond.notify_all()

    def unwatch(self, proc: Any) -> int:
        """Stop watching ``proc``; returns its peak."""
        with self._cond:
            watched = self._watched.pop(proc, None)
        return watched.peak if watched else 0

    def peak(self, proc: Any) -> int:
        with self._cond:
            watched = self._watched.get(proc)
            return watched.peak if watched else 0

    def sample(self) -> None:
        """One sample of every watched tree (the thread's loop body)."""
        with self._cond:
            watched = list(self._watched.items())
        for proc, state in watched:
            used = tree_memory(proc.pid)
            state.peak = max(state.peak, used)
            if used > state.limit and getattr(proc, "memory_exceeded", None) is None:
                proc.memory_exceeded = state.peak
                proc.kill()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watched and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            self.sample()
            with self._cond:
                self._cond.wait(self.period)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
