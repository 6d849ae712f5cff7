"""Stopping processes that end by themselves, finished from one thread as they exit.

- covers: :class:`ExitWatch`: the pool hands it a process whose graceful stop has begun
  (its request pipe closed: the runner returns) with an fd that becomes readable when it
  exits (its pidfd) and, if no thread drains its output, that output's fd; one thread
  waits on all of them in one epoll, drains output as it comes and, as each exits,
  hands it to ``on_exit`` (the pool finishes the stop); one still alive ``wait`` seconds
  after its hand-over goes to ``on_late`` (the pool's reapers: TERM, then KILL). A
  hand-over is one epoll_ctl and never wakes the thread: idle, it sleeps ``wait`` at most,
  so no deadline can come before it looks again. One wakeup per exit (fewer when several
  exit together), where a reaper thread took a hand-over and a wait of its own.
- does not: stop anything itself (process.py ``stop``), decide when a process goes
  (pool.py).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("modelops_runtime.pool")


class ExitWatch:
    """Waits for the exit of the processes handed over (by their pidfds), from one thread
    started with the first hand-over, draining their output meanwhile (a process whose
    output pipe is full never exits)."""

    def __init__(self, wait: float, on_exit: Callable[[Any], None],
                 on_late: Callable[[Any], None]) -> None:
        self.wait = wait
        self._on_exit = on_exit
        self._on_late = on_late
        self._lock = threading.Lock()
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[Any, float, int | None]] = {}  # fd → (item,
        # deadline, its output's fd)
        self._outputs: dict[int, Callable[[], bool]] = {}  # output fd → drain
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, fd: int, item: Any,
              output: tuple[int, Callable[[], bool]] | None = None) -> bool:
        """Hand over ``item``, exited once ``fd`` is readable; ``output``: an fd of its
        output and what drains it when readable (it returns False at the output's end,
        having closed the fd). False: not taken (closed, or the fd cannot be watched); the
        caller stops it as before."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except (OSError, ValueError):
                return False
            out = None
            if output is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.register(output[0], select.EPOLLIN)
                    out = output[0]
                    self._outputs[out] = output[1]
            self._watched[fd] = (item, time.monotonic() + self.wait, out)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="modelops-exits")
                self._thread.start()
        return True

    def close(self) -> None:
        """Stop watching: what is still watched goes to ``on_late`` (within ``wait`` s)."""
        with self._lock:
            self._closed = True
            if self._thread is None:
                self._epoll.close()

    def _forget(self, fd: int) -> Any:
        """Under the lock: out of the epoll before anyone closes the fds (their numbers
        may then be reused by the next hand-over)."""
        item, _, out = self._watched.pop(fd)
        for gone in (fd, out):
            if gone is not None:
                self._outputs.pop(gone, None)
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(gone)
        return item

    def _drain(self, fd: int) -> None:
        """Under the lock: read what ``fd`` holds; at its end (closed by the drain, its
        number free for the next fd registered here, under this lock) out of the epoll."""
        drain = self._outputs.get(fd)
        if drain is None or drain():
            return
        del self._outputs[fd]
        with contextlib.suppress(OSError, ValueError):  # (a closed fd left the epoll)
            self._epoll.unregister(fd)
        for pid_fd, (item, deadline, out) in self._watched.items():
            if out == fd:
                self._watched[pid_fd] = (item, deadline, None)
                break

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                late = [fd for fd, (_, deadline, _) in self._watched.items()
                        if deadline <= now or self._closed]
                late = [self._forget(fd) for fd in late]
                closed = self._closed
                timeout = min((deadline for _, deadline, _ in self._watched.values()),
                              default=now + self.wait) - now
            self._hand(self._on_late, late)
            if closed:
                self._epoll.close()
                return
            ready = self._epoll.poll(max(timeout, 0.0))
            with self._lock:
                done = []
                for fd, _ in ready:
                    if fd in self._outputs:
                        self._drain(fd)
                    elif fd in self._watched:
                        done.append(self._forget(fd))
            self._hand(self._on_exit, done)

    @staticmethod
    def _hand(to: Callable[[Any], None], items: list) -> None:
        for item in items:
            try:
                to(item)
            except Exception:  # noqa: BLE001 - the thread must go on
                log.exception("finishing a stopped warm process failed")


__all__ = ["ExitWatch"]
