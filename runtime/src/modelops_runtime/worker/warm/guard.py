"""The worker's half of the signal guard: it answers, from outside the task's reach, what
the seccomp filter of each warm process asks (runner/confine.py ``guard_signals``).

- covers: receiving a warm process's listener, from the moment it arrives (before the
  process's hello: a call it asks meanwhile is answered, never left waiting); one thread
  per worker process answering every listener: a signal is let through only if its target is in the asking warm
  process's own tree (the process, its descendants, its orphans that carry its mark), a
  new process only while the tree has fewer than its limit (else EAGAIN, remembered so the
  task fails typed); logging once per worker process when a warm process is unguarded.
- one rule keeps its thread from waiting on a stale fd: an fd it may be polling leaves the
  registry, then the thread is woken, and only then is the fd closed (its number reused).
- does not: end descendants after a task (process.py), count memory (memory.py).
- see also: docs/design.md "The signal guard" (what is asked, what is answered, why).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .memory import tree_pids
from .orphans import read_mark
from .runner.frames import CLONE_PARENT, F_SETOWN, GUARD_SYSCALLS

log = logging.getLogger("modelops_runtime.pool")

# ioctls of a seccomp listener: _IOWR('!', 0, struct seccomp_notif) and
# _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101
NOTIF_SIZE, RESP = 80, struct.Struct("=QqiI")
FLAG_CONTINUE = 1
MAX_DEPTH = 256  # ancestors walked from a target towards the warm process


@dataclass(eq=False)
class Guarded:
    """One warm process whose filter asks us (its listener)."""

    pid: int
    token: str
    max_processes: int | None  # descendants alive at once; None: unbounded
    listener: int | None  # None: asked through the listener of its template (or pending)
    pending: socket.socket | None = None  # where its listener is still to arrive
    refused_processes: int = 0  # new processes refused at the limit (since reset)
    forks: int = 0  # new processes let through (since reset): none, no descendant to end
    spawned: bool = False  # any new process let through, ever: none, no orphan to look for
    refused_signals: list[str] = field(default_factory=list)
    template: bool = False  # a template: it alone may clone with the worker as the parent


def receive_listener(sock: socket.socket) -> int | None:
    """The listener fd a starting runner sent on ``sock`` (it sends it before its hello),
    None if it sent none (no guard: its hello says why)."""
    try:  # socket.recv_fds would ignore MSG_DONTWAIT
        _msg, ancillary, _flags, _addr = sock.recvmsg(16, socket.CMSG_SPACE(4),
                                                      socket.MSG_DONTWAIT)
    except OSError:
        return None
    fds = [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
           for level, kind, data in ancillary
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for i in range(0, len(data) - len(data) % 4, 4)]
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else None


_warned: set[str] = set()


def warn_unguarded(why: str) -> None:
    """Log once per worker process (per reason) that warm processes run without the guard."""
    if why and why not in _warned:
        _warned.add(why)
        log.warning("warm processes run without the signal guard: %s. Bundle code can then "
                    "signal the worker, the nanny and other tasks, and the limit on processes "
                    "per task is not enforced (logged once per worker process)", why)


class Guard:
    """Answers the listeners of this worker process's warm processes, from one thread.
    ``before_poll`` is called by that thread between reading what it polls and polling
    (tests force an interleaving with it)."""

    def __init__(self, *, before_poll: Callable[[], None] = lambda: None) -> None:
        self._before_poll = before_poll
        self._lock = threading.Lock()
        self._by_fd: dict[int, Guarded] = {}  # listeners
        self._by_pid: dict[int, Guarded] = {}  # every guarded process
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._closed = False
        machine = GUARD_SYSCALLS.get(os.uname().machine, {})
        self._names = {nr: name for name, nr in machine.items() if name != "arch"}

    def add(self, pid: int, token: str, listener: int | None,
            max_processes: int | None) -> Guarded:
        """Answer for warm process ``pid`` (marked ``token``): through ``listener``, or
        (None) through its template's, which is registered already."""
        guarded = Guarded(pid, token, max_processes, listener)
        with self._lock:
            self._by_pid[pid] = guarded
            if listener is None:
                return guarded
            self._by_fd[listener] = guarded
            self._start()
        self._wake()
        return guarded

    def expect(self, pid: int, token: str, sock: socket.socket,
               max_processes: int | None, *, template: bool = False) -> Guarded:
        """Answer for a starting warm process ``pid`` as soon as its listener arrives on
        ``sock`` (which the guard then owns): its filter is installed before its hello, and
        a new process or a signal it asks before the worker reads that hello must not wait
        for it. :meth:`settle` once the hello came."""
        guarded = Guarded(pid, token, max_processes, None, pending=sock, template=template)
        with self._lock:
            self._by_pid[pid] = guarded
            self._start()
        self._wake()
        return guarded

    def settle(self, guarded: Guarded) -> bool:
        """After the hello of an :meth:`expect`-ed process: True if its listener is answered
        (it sent it before its hello, so it is here by now), False if it sent none (then it
        is no longer guarded here)."""
        with self._lock:
            sock = self._take_listener(guarded)
            answered = guarded.listener is not None
            if not answered and self._by_pid.get(guarded.pid) is guarded:
                del self._by_pid[guarded.pid]
        # the thread may be polling the socket's fd, without the listener: woken first, it
        # polls the listener; closed first, the socket's number could be reused (a pipe of
        # the next fork) and the thread wait on that while the process waits for an answer
        self._release(sock)
        return answered

    def _take_listener(self, guarded: Guarded) -> socket.socket | None:
        """Under the lock: receive a pending listener if it arrived, and answer it. Returns
        the socket it came on, for :meth:`_release` (out of the registry, not yet closed)."""
        sock = guarded.pending
        if sock is None:
            return None
        listener = receive_listener(sock)  # None: it sent none (its hello says why)
        guarded.pending = None
        if listener is not None:
            guarded.listener = listener
            self._by_fd[listener] = guarded
        return sock

    def _release(self, sock: socket.socket | None) -> None:
        """Close ``sock`` (taken out of the registry) once the thread is woken: a poll of
        an earlier reading of the registry then returns at once, never waiting on the fd's
        number reused by something else."""
        if sock is not None:
            self._wake()
            sock.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="modelops-signal-guard")
            self._thread.start()

    def remove(self, guarded: Guarded) -> None:
        """Stop answering for ``guarded`` (its processes' asked calls then fail ENOSYS)."""
        with self._lock:
            if self._by_pid.get(guarded.pid) is guarded:
                del self._by_pid[guarded.pid]
            sock, guarded.pending = guarded.pending, None
            listener = guarded.listener
            if listener is not None and self._by_fd.get(listener) is guarded:
                del self._by_fd[listener]
            else:
                listener = None
        self._release(sock)
        if listener is not None:
            self._wake()  # as _release: woken before its number can be reused
            # the thread answers only listeners still registered (checked under the lock)
            with contextlib.suppress(OSError):
                os.close(listener)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                fds = dict(self._by_fd)
                pending = {g.pending.fileno(): g for g in self._by_pid.values()
                           if g.pending is not None}
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            for fd in (*fds, *pending):
                poller.register(fd, select.POLLIN)
            self._before_poll()
            for fd, events in poller.poll():
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                if fd in pending:  # a starting process's listener arrived: answer it now
                    with self._lock:
                        sock = None
                        if pending[fd].pending is not None \
                                and pending[fd].pending.fileno() == fd:
                            sock = self._take_listener(pending[fd])
                    if sock is not None:  # this thread polls nothing now: no wake needed
                        sock.close()
                    continue
                guarded = fds.get(fd)
                if guarded is None or not events & select.POLLIN:
                    continue
                with self._lock:
                    if self._by_fd.get(fd) is not guarded:
                        continue  # removed (and closed) meanwhile
                    try:
                        self._answer(guarded)
                    except Exception:  # noqa: BLE001 - the thread must go on
                        log.exception("signal guard: answering warm process %d failed",
                                      guarded.pid)

    def _answer(self, guarded: Guarded) -> None:
        buf = bytearray(NOTIF_SIZE)
        try:
            fcntl.ioctl(guarded.listener, NOTIF_RECV, buf, True)
        except OSError as exc:  # ENOENT: the asking thread was interrupted, already gone
            if exc.errno not in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                raise
            return
        ident, asker = struct.unpack_from("=QI", buf, 0)
        nr = struct.unpack_from("=i", buf, 16)[0]
        args = struct.unpack_from("=6Q", buf, 32)
        owner, tgid = self._owner(guarded, asker)
        error = self._decide(owner, asker, self._names.get(nr, ""), args, tgid)
        resp = RESP.pack(ident, 0, -error if error else 0, 0 if error else FLAG_CONTINUE)
        with contextlib.suppress(OSError):  # ENOENT: the asker died meanwhile
            fcntl.ioctl(guarded.listener, NOTIF_SEND, bytearray(resp), True)

    def _owner(self, guarded: Guarded, asker: int) -> tuple[Guarded, int | None]:
        """The innermost guarded process whose tree ``asker`` is in, and the asker's
        process: a task process forked from a template stacks its own filter on the
        template's, and a call that one filter lets through may be asked through the
        other's listener."""
        if asker in self._by_pid:  # the main thread of a guarded process (tids are unique)
            return self._by_pid[asker], asker
        tgid = walk = _tgid(asker)
        for _ in range(MAX_DEPTH):
            if walk is None or walk in (0, 1, os.getpid()):
                break
            if walk in self._by_pid:
                return self._by_pid[walk], tgid
            walk = _ppid(walk)
        # not by its mark: a process chooses its own environment. The listener itself is
        # proof of origin (its filter is inherited, never handed over)
        return guarded, tgid

    def _decide(self, guarded: Guarded, asker: int, name: str, args: tuple,
                tgid: int | None = None) -> int:
        """0 to let the call run, else the errno it fails with."""
        def signed(value: int) -> int:
            value &= 0xFFFFFFFF
            return value - (1 << 32) if value >= 1 << 31 else value

        if name in ("clone", "fork", "vfork"):
            if name == "clone" and args[0] & CLONE_PARENT:
                # a process whose parent is the worker would leave its tree (uncounted,
                # not ended with its task): only a template forks its task processes so
                # (and they are not in its tree: nothing to count)
                return 0 if guarded.template and tgid == guarded.pid else errno.EPERM
            limit = guarded.max_processes
            if limit is not None and len(tree_pids(guarded.pid)) - 1 >= limit:
                guarded.refused_processes += 1
                return errno.EAGAIN
            guarded.forks += 1
            guarded.spawned = True
            return 0
        if name == "fcntl":
            if args[1] & 0xFFFFFFFF != F_SETOWN:
                return 0
            target = signed(args[2])
        elif name in ("kill", "rt_sigqueueinfo", "tkill", "tgkill", "rt_tgsigqueueinfo"):
            target = signed(args[0])
        else:
            return errno.EPERM
        if target == 0 or self._reaches_only_own(guarded, target):
            return 0
        if len(guarded.refused_signals) < 20:
            guarded.refused_signals.append(f"{name}({target}) from pid {asker}")
        return errno.EPERM

    def _reaches_only_own(self, guarded: Guarded, target: int) -> bool:
        if target == -1:
            return False
        if target > 0:
            return self._in_tree(guarded, target)
        members = [pid for pid in _all_pids() if _pgid(pid) == -target]
        return bool(members) and all(self._in_tree(guarded, pid) for pid in members)

    @staticmethod
    def _in_tree(guarded: Guarded, target: int) -> bool:
        """``target`` (a process or thread id) is the warm process, one of its descendants,
        or an orphan of them (adopted by the worker) that carries its mark."""
        pid = _tgid(target)
        if pid is None:
            return False
        me, walk = os.getpid(), pid
        for _ in range(MAX_DEPTH):
            if walk == guarded.pid:
                return True
            if walk in (0, 1, me):
                break
            parent = _ppid(walk)
            if parent is None:
                break
            walk = parent
        return bool(guarded.token) and read_mark(pid) == guarded.token


def waiting_for_answer(pid: int) -> list[str]:
    """The threads (``pid/tid``) of ``pid``'s tree blocked now in a call its filter asked
    of the worker (a new process or a signal), unanswered: named when a wait on the
    process times out, as nothing else would say why it stopped."""
    found = []
    for member in tree_pids(pid):
        try:
            tids = os.listdir(f"/proc/{member}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{member}/task/{tid}/wchan", "rb") as fh:
                    if b"seccomp_do_user_notification" in fh.read():
                        found.append(f"{member}/{tid}")
            except OSError:
                continue
    return found


def _status_field(pid: int, name: bytes) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tgid(tid: int) -> int | None:
    return _status_field(tid, b"Tgid:")


def _ppid(pid: int) -> int | None:
    return _status_field(pid, b"PPid:")


def _pgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


GUARD = Guard()  # one per worker process: its thread starts with the first warm process
