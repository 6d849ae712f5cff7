"""Stopping processes that end by themselves, finished as they exit, mostly without a
thread waking for them.

- covers: :class:`ExitWatch`: the pool hands it a process whose graceful stop has begun
  (its request pipe closed: the runner returns) with an fd that becomes readable when it
  exits (its pidfd) and, if no thread drains its output, that output's fd. The pool's
  next call of :meth:`ExitWatch.collect` (a task thread, at the end of its task) hands
  those that have exited to ``on_collect`` (the pool finishes the quick ones in that
  thread): no wakeup at all, where a reaper thread took a
  hand-over, a wait and the GIL fights of both (~6 context switches per task). Until then
  it is *quiet*: no thread waits on it. One not collected within ``linger`` (no next task,
  or :meth:`hurry`: someone waits for it) is waited for by the watch's own thread in an
  epoll, its output drained meanwhile (a process whose output pipe is full never exits);
  one still alive ``wait`` seconds after its hand-over goes to ``on_late`` (the pool's
  reapers: TERM, then KILL).
- does not: stop anything itself (``on_exit``: the pool finishes it), decide when a
  process goes (pool.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("modelops_runtime.pool")

LINGER = 0.05  # s a handed-over process is left to the next collect() before the thread waits on it


@dataclass(eq=False)
class _Watched:
    item: Any
    deadline: float  # then on_late
    wake_by: float  # still quiet then: the thread waits on it
    out: int | None  # its output's fd (None: none, or at its end)
    quiet: bool = True  # no thread waits on it (its fds are in the quiet epoll only)


class ExitWatch:
    """Processes handed over, finished by :meth:`collect` or by one thread of its own
    (started with the first hand-over) once they have exited."""

    def __init__(self, wait: float, on_exit: Callable[[Any], None],
                 on_late: Callable[[Any], None], linger: float = LINGER,
                 on_collect: Callable[[Any], None] | None = None) -> None:
        self.wait = wait
        self.linger = min(linger, wait)
        self._on_exit = on_exit
        self._on_collect = on_collect or on_exit  # (what collect() found exited)
        self._on_late = on_late
        self._lock = threading.Lock()
        self._epoll = select.epoll()  # what the thread waits on
        self._quiet = select.epoll()  # what collect() looks at (no one waits on it)
        self._watched: dict[int, _Watched] = {}  # by the fd that says it exited
        self._outputs: dict[int, Callable[[], bool]] = {}  # output fd → drain
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._sleeps_until = float("inf")  # when the thread looks again, at the latest
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, fd: int, item: Any,
              output: tuple[int, Callable[[], bool]] | None = None) -> bool:
        """Hand over ``item``, exited once ``fd`` is readable; ``output``: an fd of its
        output and what drains it when readable (it returns False at the output's end,
        having closed the fd). False: not taken (closed, or the fd cannot be watched); the
        caller stops it as before."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return False
            try:
                self._quiet.register(fd, select.EPOLLIN)
            except (OSError, ValueError):
                return False
            out = None
            if output is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._quiet.register(output[0], select.EPOLLIN)
                    out = output[0]
                    self._outputs[out] = output[1]
            watched = self._watched[fd] = _Watched(item, now + self.wait,
                                                   now + self.linger, out)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="modelops-exits")
                self._thread.start()
            elif watched.wake_by < self._sleeps_until:  # it sleeps longer (it was idle)
                self._sleeps_until = watched.wake_by
                self._wake()
        return True

    def collect(self) -> None:
        """In the calling thread: finish (``on_exit``) the quiet processes that have
        exited; drain the output of the others."""
        if not self._watched:  # (read without the lock: a miss is the next call's)
            return
        with self._lock:
            done = [self._forget(fd) for fd in self._ready(self._quiet.poll(0))]
        self._hand(self._on_collect, done)

    def hurry(self) -> None:
        """Someone waits for a handed-over process to be finished: from now on the thread
        waits on every quiet one (finishing it as soon as it exits)."""
        with self._lock:
            for fd, watched in list(self._watched.items()):
                if watched.quiet:
                    self._loud(fd, watched)

    def close(self) -> None:
        """Stop watching: what is still watched goes to ``on_late`` (at once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is None:
                self._close_fds()
            else:
                self._wake()

    # -- under the lock ------------------------------------------------------------------

    def _ready(self, events: list) -> list[int]:
        """Drain the outputs among ``events``; the exit fds of the processes that exited."""
        exited = []
        for fd, _ in events:
            if fd in self._outputs:
                self._drain(fd)
            elif fd in self._watched:
                exited.append(fd)
        return exited

    def _loud(self, fd: int, watched: _Watched) -> None:
        """The thread waits on it from now on (a ready fd added wakes its poll)."""
        watched.quiet = False
        for moved in (fd, watched.out):
            if moved is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._quiet.unregister(moved)
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.register(moved, select.EPOLLIN)

    def _forget(self, fd: int) -> Any:
        """Out of both epolls before anyone closes its fds (their numbers may then be
        reused by the next hand-over)."""
        watched = self._watched.pop(fd)
        for gone in (fd, watched.out):
            if gone is not None:
                self._outputs.pop(gone, None)
                self._unregister(gone)
        return watched.item

    def _drain(self, fd: int) -> None:
        """Read what ``fd`` holds; at its end (closed by the drain, its number free for
        the next fd registered here, under this lock) out of the epolls."""
        drain = self._outputs.get(fd)
        if drain is None or drain():
            return
        del self._outputs[fd]
        self._unregister(fd)  # (a closed fd left them already)
        for watched in self._watched.values():
            if watched.out == fd:
                watched.out = None
                break

    def _unregister(self, fd: int) -> None:
        for epoll in (self._quiet, self._epoll):
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _close_fds(self) -> None:
        self._epoll.close()
        self._quiet.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                late = [self._forget(fd) for fd, watched in list(self._watched.items())
                        if watched.deadline <= now or self._closed]
                for fd, watched in self._watched.items():
                    if watched.quiet and watched.wake_by <= now:
                        self._loud(fd, watched)
                closed = self._closed
                self._sleeps_until = min(
                    (min(w.deadline, w.wake_by) if w.quiet else w.deadline
                     for w in self._watched.values()), default=now + self.wait)
                timeout = self._sleeps_until - now
            self._hand(self._on_late, late)
            if closed:
                with self._lock:
                    self._close_fds()
                return
            events = self._epoll.poll(max(timeout, 0.0))
            with self._lock:
                if any(fd == self._wake_r for fd, _ in events):
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                done = [self._forget(fd) for fd in self._ready(events)]
            self._hand(self._on_exit, done)

    @staticmethod
    def _hand(to: Callable[[Any], None], items: list) -> None:
        for item in items:
            try:
                to(item)
            except Exception:  # noqa: BLE001 - the thread must go on
                log.exception("finishing a stopped warm process failed")


__all__ = ["ExitWatch", "LINGER"]
