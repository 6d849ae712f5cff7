"""No descendant of a warm process may outlive it.

A warm process is a session leader, so a signal to its group reaches its ordinary
children; a descendant that starts its own session (``start_new_session=True``, a
daemon's double fork) leaves the group, and once its parent is gone the kernel hands it to
the nearest *child subreaper* among its ancestors. The worker process makes itself one
(:func:`become_subreaper`), so such orphans stay its children instead of escaping to init,
and each warm process's environment carries a mark (_MODELOPS_WARM_PROCESS=<token>) that its
descendants inherit: :func:`adopted_descendants` finds the orphans of one warm process
among the worker's children, to be killed and reaped when that process is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

import psutil

from .memory import _children

log = logging.getLogger("modelops_runtime.pool")

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux; best effort)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot make the worker process a child subreaper (%s): a descendant "
                    "of a warm process that leaves its session may outlive it", exc)
        return False
    return True


def adopted_descendants(token: str, parent: int | None = None) -> list[psutil.Process]:
    """Children of ``parent`` (this process) whose environment carries ``token``: orphans
    of the warm process that was given it, adopted by us as their subreaper."""
    if not token:
        return []
    mark = f"_MODELOPS_WARM_PROCESS={token}".encode()
    found = []
    for pid in _children(parent or os.getpid()) or ():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if mark not in fh.read().split(b"\0"):
                    continue
            proc = psutil.Process(pid)
        except (OSError, psutil.Error):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until every process has exited; a zombie counts as gone (its parent may be a
    PID 1 that never reaps adopted orphans)."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        while time.monotonic() < deadline:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.005)
