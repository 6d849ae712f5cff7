"""No descendant of a warm process may outlive it.

A warm process is a session leader, so a signal to its group reaches its ordinary
children; a descendant that starts its own session (``start_new_session=True``, a
daemon's double fork) leaves the group, and once its parent is gone the kernel hands it to
the nearest *child subreaper* among its ancestors. The worker process makes itself one
(:func:`become_subreaper`), so such orphans stay its children instead of escaping to init,
and each warm process's environment carries a mark (_MODELOPS_WARM_PROCESS=<token>) that its
descendants inherit: :func:`adopted_descendants` finds the orphans of one warm process
among the worker's children, to be killed and reaped when that process is stopped.

An orphan that exits by itself stays a zombie (a pid-table entry) until its parent waits
for it, and its parent is now the worker: :func:`sweep` (the pool's housekeeper, every
second) reaps it, :func:`reap` those a stop killed. Neither ever waits for a process that
someone in the worker waits for (a ``subprocess.Popen`` of the worker, of Dask, of a model
in direct mode; a task process forked from a template, whose exit status types its
error): only for a child the worker did not fork, told apart by what the kernel keeps --
  * its session, readable also of a zombie: a process the worker forked is in the worker's
    session or, after ``setsid()``, in its own (session id = its pid), for its whole life;
    a child in a third session is an orphan the worker adopted. A template's task process
    is in the template's session until its ``setsid()``: templates' sessions are skipped.
  * its mark, readable only while it lives: a child carrying the token of a warm process
    of the pool that is not that process is an orphan; it is remembered (pid and start
    time) and reaped once it has exited.
An orphan that leads its own session and exits before a sweep saw it alive is recognised
by neither: it stays a zombie until the worker process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable

import psutil

from .memory import children
from .runner.frames import TOKEN_VAR

log = logging.getLogger("modelops_runtime.pool")

PR_SET_CHILD_SUBREAPER = 36
MARK = f"{TOKEN_VAR}=".encode()  # + the token of a warm process


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


def adopted_descendants(token: str, parent: int | None = None,
                        owner: int | None = None) -> list[psutil.Process]:
    """Children of ``parent`` (this process) whose environment carries ``token``, except
    ``owner`` (the warm process that was given it, a child too): its orphans, adopted by us
    as their subreaper."""
    if not token:
        return []
    found = []
    for pid in children(parent or os.getpid()) or ():
        if pid == owner or read_mark(pid) != token:
            continue
        try:
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


def read_mark(pid: int) -> str | None:
    """The warm-process token in ``pid``'s environment (None: unmarked, gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(MARK):
            return entry[len(MARK):].decode(errors="replace")
    return None


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of ``pid``, also of a zombie (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # the name may hold ") "
        return fields[0].decode(), int(fields[1]), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


class _Orphans:
    """The orphans this process knows of, and the one lock under which any of them is
    waited for (a pid reaped is free for the next fork: it must never be waited for
    again)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: dict[int, psutil.Process] = {}  # alive when seen; identity = start time

    def try_reap(self, pid: int) -> bool:
        """Under the lock: wait for ``pid`` if it has exited (True once it is no longer
        ours to wait for)."""
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            self.known.pop(pid, None)
            return True
        return False


_ORPHANS = _Orphans()


def sweep(procs: Iterable = ()) -> list[int]:
    """Reap this process's children that exited and that no one else will wait for (see
    the module's docstring); remember the living ones that carry the mark of a warm process
    and are not that process. ``procs``: the pool's processes (handles with ``pid`` and
    ``token``; a template has no token). Returns the pids reaped."""
    procs = list(procs)
    owners = {p.token: p.pid for p in procs if getattr(p, "token", "")}
    owned = {p.pid for p in procs}
    # a template's task process is in its session until its setsid(): leave those alone
    # (without a token: a template, or a stand-in; never fewer than the templates)
    templates = {p.pid for p in procs if not getattr(p, "token", "")}
    me, my_session = os.getpid(), os.getsid(0)
    reaped = []
    with _ORPHANS.lock:
        for pid, proc in list(_ORPHANS.known.items()):
            if not _same(proc):  # reaped elsewhere (its pid may be reused)
                del _ORPHANS.known[pid]
        for pid in children(me) or ():
            if pid in owned:
                continue
            stat = _stat(pid)
            if stat is None or stat[1] != me:
                continue
            state, _parent, session = stat
            known = _ORPHANS.known.get(pid)
            if state == "Z":
                if ((known is not None or session not in (my_session, pid, *templates))
                        and _ORPHANS.try_reap(pid)):
                    reaped.append(pid)
            elif known is None and (token := read_mark(pid)) and owners.get(token, pid) != pid:
                with contextlib.suppress(psutil.Error):
                    _ORPHANS.known[pid] = psutil.Process(pid)
    if reaped:
        log.debug("reaped %d orphan(s) that had exited: %s", len(reaped), reaped)
    return reaped


def reap(procs: Iterable[psutil.Process], timeout: float) -> None:
    """Wait (bounded) for those of ``procs`` that are now this process's children (orphans
    a stop killed: adopted, or reparented when their parent died): under the lock, so no
    pid is waited for twice."""
    me = os.getpid()
    with _ORPHANS.lock:
        pending = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if _same(proc) and proc.ppid() == me:
                    _ORPHANS.known[proc.pid] = proc
                    pending.append(proc.pid)
    deadline = time.monotonic() + timeout
    while pending:
        with _ORPHANS.lock:
            pending = [pid for pid in pending
                       if pid in _ORPHANS.known and not _ORPHANS.try_reap(pid)]
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


def _same(proc: psutil.Process) -> bool:
    """``proc`` is still the process it was (a zombie included), not a reuse of its pid."""
    try:
        return proc.is_running()
    except psutil.Error:
        return False
