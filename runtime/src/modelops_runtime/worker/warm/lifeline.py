"""The kernel's watch over a warm process's lifeline pipe (armed by the worker).

- covers: :func:`arm_lifeline` and :func:`aim_lifeline` on the read end the worker hands a
  process (shared with it: one open file), so that the last close of the write end kills
  the process's group in the kernel, and the runner needs no thread to watch it (runner
  confine.py ``kernel_watched``).
- does not: hand the pipe over (process.py, template.py), kill anything itself.
- see also: docs/design.md "The runner program".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal


def arm_lifeline(read_fd: int, armed: bool = True) -> None:
    """Have the kernel watch a lifeline pipe for the process given its read end: O_ASYNC
    and F_SETSIG SIGKILL on that end (shared with the process: one open file), so that
    once :func:`aim_lifeline` names the process's group, the last close of the write end
    (the worker closing it, or dying) sends SIGKILL to that group. The runner then starts
    no thread to watch it (runner confine.py ``kernel_watched``). Best effort: if it
    fails (or not ``armed``), the runner starts its thread."""
    if not armed:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(read_fd, fcntl.F_SETSIG, signal.SIGKILL)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_ASYNC)


def aim_lifeline(read_fd: int, pid: int) -> None:
    """The group the kernel kills when an armed lifeline breaks: the process's own (it is
    a session leader: its group id is its pid, once it made itself one)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(read_fd, fcntl.F_SETOWN, -pid)


__all__ = ["aim_lifeline", "arm_lifeline"]
