"""The output (stdout + stderr) of a warm process, drained into a bounded buffer: by a
thread of its own, or (a task process forked from a template, which lives for one task)
by whoever waits on the process (:class:`OutputPoll`, beside its pipes and its exit)."""

from __future__ import annotations

import os
import select
import threading

LOG_KEEP = 256 * 1024              # bytes of each process's output kept in memory
TAIL_CHARS = 8000                  # characters of output attached to errors


class LogTail:
    """A warm process's stdout+stderr: one pipe, always drained into a bounded buffer (a
    full pipe would block the user's print and hang the task). ``threaded``: by a thread;
    else whoever waits on the process drains it (:meth:`polled`) and closes it."""

    def __init__(self, fd: int, keep: int = LOG_KEEP, *, threaded: bool = True) -> None:
        self._fd = fd
        self._keep = keep
        self._buf = bytearray()
        self._total = 0
        self._eof = False
        self._lock = threading.Lock()
        os.set_blocking(fd, False)
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._drain, daemon=True,
                                            name=f"modelops-log-{fd}")
            self._thread.start()

    def polled(self) -> int | None:
        """The fd to poll (readable: call :meth:`sync`) while waiting on the process; None
        when a thread drains it, or at its end."""
        return None if self._thread is not None or self._eof else self._fd

    def close(self) -> None:
        """Stop reading (not threaded: once the process and its tree are gone)."""
        if self._thread is None:
            with self._lock:
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd, self._eof = -1, True

    def _drain(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._eof:
            poller.poll()  # an EOF pipe stays readable (POLLHUP): this always wakes up
            self.sync()
        with self._lock:  # only this thread closes: a poll on a closed fd might never wake
            os.close(self._fd)

    def sync(self) -> None:
        """Move everything currently in the pipe into the buffer (reads happen under the
        lock, so after this returns the buffer holds all output written before the call)."""
        with self._lock:
            while not self._eof:
                try:
                    chunk = os.read(self._fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    chunk = b""
                if not chunk:
                    self._eof = True
                    if self._thread is None:  # no thread polls it: closed here
                        os.close(self._fd)
                        self._fd = -1
                    return
                self._buf += chunk
                self._total += len(chunk)
                if len(self._buf) > 2 * self._keep:
                    del self._buf[:-self._keep]

    def mark(self) -> int:
        with self._lock:
            return self._total

    def tail(self, since: int | None = None, chars: int = TAIL_CHARS) -> str:
        """The last output (only what was written after ``since``, a :meth:`mark`)."""
        self.sync()
        with self._lock:
            size = min(len(self._buf), self._keep)
            if since is not None:
                size = min(size, self._total - since)
            data = bytes(self._buf[len(self._buf) - size:]) if size > 0 else b""
        text = data.decode(errors="replace")
        return text[-chars:]


class OutputPoll:
    """A poll of one fd of a process (None: none) and, when no thread drains its output,
    of its output, drained whenever it is what woke the poll."""

    def __init__(self, log: LogTail, fd: int | None, events: int) -> None:
        self._log = log
        self._poller = select.poll()
        if fd is not None:
            self._poller.register(fd, events)
        self._log_fd = log.polled()
        if self._log_fd is not None:
            self._poller.register(self._log_fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        """Poll up to ``timeout`` s."""
        ready = self._poller.poll(max(0.0, timeout) * 1000)
        if self._log_fd is not None and any(fd == self._log_fd for fd, _ in ready):
            self._log.sync()
            if self._log.polled() is None:  # its end (closed: its number may be reused,
                self._poller.unregister(self._log_fd)  # also when another thread saw it)
                self._log_fd = None
