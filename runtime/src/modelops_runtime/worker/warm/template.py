"""Fresh processes from a template (MAX_PROCESS_REUSE=1, FRESH_PROCESS_FROM=template).

A template is a warm process (the runner started with ``--template MODULE``) that has
started the interpreter and imports none of the bundle's modules: only what its task
processes imported from outside the bundle and the runner's prewarm.py found clean (its
import does nothing a fork would not reproduce). For each task the worker hands it the
four pipe ends of a new task process over a socket; it forks one whose parent is the
worker (clone with CLONE_PARENT; a double fork where it cannot, the worker adopting the
task process as a child subreaper), so the worker waits for it, signals its process group
and reads its exit status as for any process it spawned. The task
process runs exactly one task, importing the bundle itself as a new interpreter would.

:class:`TemplateProcess` is the handle of a template; :class:`Templates` keeps one per
(bundle, venv, module), replaces one that died, whose venv was rebuilt or that is past the
TTL, and registers each in the pool, whose reaper stops it and whose shutdown reaches it.
A template whose own state moved while importing raises :class:`TemplateTainted`: the
executor then execs that bundle's processes instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import select
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from pathlib import Path

from ...errors import ProcessCrashed
from ..counters import RemovalReason
from ..limits import limit_error
from .failures import Lost, describe_exit
from .guard import GUARD
from .logtail import LogTail
from .memory import MemorySampler
from .runner.frames import LEARNED_MAX
from .lifeline import aim_lifeline, arm_lifeline
from .process import PIPE_SIZE, WarmProcess
from .scratch import TaskDirs
from .venvs.store import FINGERPRINT, Venv


log = logging.getLogger("modelops_runtime.pool")

ORDER_IMPORTS = 500  # ... at most this many with one order (one order is read in 64 KiB)
ORDER_BYTES = 60_000  # an order with an earlier template's plan larger than this goes without


def venv_identity(venv: Venv) -> tuple:
    """What changes when a venv is rebuilt in place: its fingerprint file's inode/mtime."""
    try:
        st = (venv.path / FINGERPRINT).stat()
    except OSError:
        return (str(venv.path), None)
    return (str(venv.path), st.st_ino, st.st_mtime_ns)


class TemplateLost(Exception):
    """The template ended (or broke its protocol) while asked for a fork."""


class TemplateTainted(Exception):
    """The template's own state moved while it imported learned modules (a thread started,
    a file opened...): no task process is forked from it; it has ended."""


class _Adopted:
    """The ``Popen`` part a :class:`WarmProcess` needs, for a process the worker did not
    spawn itself (a template forked it as the worker's child): wait and returncode."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours (any more): nothing to report
                self.returncode = -9
                break
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)
        return self.returncode


class TemplateProcess(WarmProcess):
    """A template: forks task processes; never runs a task itself."""

    module = ""
    venv_id: tuple = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fork_lock = threading.Lock()  # one order on the socket at a time
        self._learned: set[str] = set()  # module names told to the template so far
        self._to_import: list[str] = []  # ... of which not yet sent with an order
        self.excluded: dict[str, str] = {}  # learned names each task process imports itself
        self._said_double = False  # logged why it double-forks (runner clone.py)
        self.on_excluded: Callable[[dict[str, str]], None] = lambda names: None
        # an earlier template's decisions (plans.py), sent with the first order; told what
        # it has imported (and excluded) whenever that changed, to be kept for the next
        self.task_dirs: TaskDirs | None = None  # its task processes' scratch directories
        self.plan: dict | None = None
        self.on_plan: Callable[[list, dict[str, str]], None] = lambda names, excluded: None

    def learn(self, imported: object) -> None:
        """Module names a task process imported from outside the bundle while running: the
        template imports those its probes find clean before its next fork (runner
        prewarm.py), so later task processes start with them. Bounded; anything but a list
        of names is ignored (it came from a task)."""
        if not isinstance(imported, list):
            return
        with self._fork_lock:
            for name in imported[:LEARNED_MAX]:
                if (isinstance(name, str) and name not in self._learned
                        and len(self._learned) < LEARNED_MAX):
                    self._learned.add(name)
                    self._to_import.append(name)

    def fork(self, *, start_timeout: float, sampler: MemorySampler | None,
             label: str) -> WarmProcess:
        """A new task process, forked from this template and said hello. Raises
        :class:`TemplateLost` if the template is gone (the caller replaces it),
        :class:`~...errors.ProcessCrashed` if the task process died starting, or a limit
        error of the worker."""
        token = uuid.uuid4().hex
        fds: list[int] = []
        scratch = None
        try:
            # beneath the template's scratch: its filesystem sandbox allows writes there
            if self.task_dirs is None:
                self.task_dirs = TaskDirs(self.scratch)
            scratch = self.task_dirs.make()
            for _ in range(4):
                fds.extend(os.pipe())
        except OSError as exc:
            _close(fds)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise limit_error(exc, "cannot start a task process from a template") from exc
        req_r, req_w, resp_r, resp_w, life_r, life_w, log_r, log_w = fds
        for fd in (req_w, resp_r):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        arm_lifeline(life_r)  # aimed at the task process once its pid is known
        try:
            with self._fork_lock:
                imports = self._to_import[:ORDER_IMPORTS]
                del self._to_import[:ORDER_IMPORTS]
                fields = {"scratch": str(scratch), "token": token, "imports": imports}
                if self.plan is not None:
                    fields["plan"], self.plan = self.plan, None
                order = marshal.dumps(fields)
                if len(order) > ORDER_BYTES and "plan" in fields:  # probed as before
                    del fields["plan"]
                    order = marshal.dumps(fields)
                self._order(order, [req_r, resp_w, life_r, log_w])
                _close([req_r, resp_w, log_w])  # the task process has them now
                reply = self.exchange(None, timeout=start_timeout,
                                      label=f"a fork of the template of {self.module}")
                pid = reply.get("pid") if reply.get("op") == "forked" else 0
                if pid:
                    aim_lifeline(life_r, pid)
                _close([life_r])
        except BaseException as exc:
            _close(fds)
            shutil.rmtree(scratch, ignore_errors=True)
            if isinstance(exc, Lost):
                raise TemplateLost(f"template {self.pid}: {exc}") from None
            raise
        excluded = reply.get("excluded")
        if isinstance(excluded, dict) and excluded:
            self._exclude(excluded)
        prewarmed = reply.get("prewarmed")
        if isinstance(prewarmed, list) and not reply.get("tainted"):
            self.on_plan(prewarmed[:LEARNED_MAX], dict(self.excluded))
        if reply.get("double") and not self._said_double:
            self._said_double = True
            log.info("the template of %s double-forks its task processes (a middle process "
                     "each, slower): %s", self.module, reply["double"])
        pid = reply.get("pid") if reply.get("op") == "forked" else 0
        if not pid and reply.get("tainted"):
            _close([req_w, resp_r, life_w, log_r])
            shutil.rmtree(scratch, ignore_errors=True)
            raise TemplateTainted(str(reply["tainted"]))
        if not pid:
            _close([req_w, resp_r, life_w, log_r])
            shutil.rmtree(scratch, ignore_errors=True)
            if reply.get("op") != "forked":
                self.kill()
                raise TemplateLost(f"template {self.pid} answered {reply!r}")
            raise limit_error(OSError(0, reply.get("error", "fork failed")),
                              f"template {self.pid} could not fork a task process")
        os.set_blocking(req_w, False)
        os.set_blocking(resp_r, False)
        child = WarmProcess(_Adopted(pid), key=self.key, venv=self.venv, request_fd=req_w,
                            response_fd=resp_r, lifeline_fd=life_w, log=LogTail(log_r, threaded=False),
                            max_tasks=1, ttl=float("inf"), scratch=scratch)
        child.token, child.sampler = token, sampler
        child.max_processes = self.max_processes
        child.scratch_done = self.task_dirs.done  # (only once it and its tree are gone)
        try:
            hello = child.exchange(None, timeout=start_timeout, label="a forked start")
        except Lost:
            child.stop(graceful=False)
            how, code, sig = describe_exit(child.popen.returncode)
            tail = child.log.tail()
            raise ProcessCrashed(
                f"a task process forked from the template of {self.module} (pid {self.pid}) "
                f"died before running {label}: {how}. Its output:\n{tail or '(none)'}",
                exit_code=code, signal_name=sig, pid=pid, log_tail=tail) from None
        if self.guarded is not None:  # asked through the template's listener
            child.guarded = GUARD.add(pid, token, None, child.max_processes)
        if hello.get("op") != "hello":  # pragma: no cover - protocol guard
            child.stop(graceful=False)
            raise ProcessCrashed(f"forked process {pid} sent {hello!r} instead of hello",
                                 exit_code=None, signal_name=None, log_tail="")
        return child

    def _exclude(self, excluded: dict) -> None:
        new = {str(k): str(v) for k, v in list(excluded.items())[:LEARNED_MAX]
               if k not in self.excluded}
        self.excluded.update(new)
        for name, why in new.items():
            log.info("the template of %s does not import %s for its task processes (each "
                     "imports it itself, as a new interpreter does): %s", self.module, name,
                     why)
        self.on_excluded(new)

    def _order(self, order: bytes, fds: list[int]) -> None:
        if self._req < 0 or self.exited():
            raise TemplateLost(f"template {self.pid} has ended")
        sock = socket.socket(fileno=self._req)
        try:
            poller = select.poll()
            poller.register(self._req, select.POLLOUT)
            if not poller.poll(5000):
                raise TemplateLost(f"template {self.pid} takes no orders")
            socket.send_fds(sock, [order], fds)
        except OSError as exc:  # EPIPE, ECONNRESET: it ended
            raise TemplateLost(f"template {self.pid}: {exc}") from None
        finally:
            sock.detach()


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Templates:
    """One template per key; thread-safe. ``spawn(venv)`` starts one (through the pool),
    ``track``/``drop`` register it with the pool (which stops it)."""

    def __init__(self, *, ttl: float, track: Callable[[WarmProcess], None],
                 drop: Callable[[WarmProcess, RemovalReason], None]) -> None:
        self.ttl = ttl
        self._track = track
        self._drop = drop
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._current: dict[Hashable, TemplateProcess] = {}

    def fork(self, key: Hashable, venv: Venv, spawn: Callable[[], TemplateProcess], *,
             start_timeout: float, sampler: MemorySampler | None, label: str,
             picked: Callable[[TemplateProcess], None] = lambda t: None) -> WarmProcess:
        """A task process forked from the template of ``key`` (started or replaced first
        if needed; ``picked`` is told which). A template that died is replaced once."""
        for attempt in (1, 2):
            template = self._template(key, venv, spawn)
            try:
                picked(template)
                return template.fork(start_timeout=start_timeout, sampler=sampler,
                                     label=label)
            except TemplateTainted:
                self._retire(key, template, RemovalReason.reuse)
                raise
            except TemplateLost as exc:
                self._retire(key, template, RemovalReason.crash)
                if attempt == 1:
                    log.warning("the template of %s is replaced: %s", template.module, exc)
                if attempt == 2:
                    tail = template.log.tail()
                    how, code, sig = describe_exit(template.exit_status())
                    raise ProcessCrashed(
                        f"the template process for {label} ended twice in a row ({exc}; "
                        f"{how}). Its output:\n{tail or '(none)'}\nCheck that the entrypoint "
                        "module imports cleanly, or set worker.executor.freshProcessFrom: "
                        "exec.", exit_code=code, signal_name=sig, pid=template.pid,
                        log_tail=tail) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _template(self, key: Hashable, venv: Venv,
                  spawn: Callable[[], TemplateProcess]) -> TemplateProcess:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            current = self._current.get(key)
            if current is not None:
                reason = None
                if current.exited():
                    reason = RemovalReason.crash
                elif current.venv_id != venv_identity(venv):
                    reason = RemovalReason.venv_changed
                elif time.monotonic() >= current.expires_at:
                    reason = RemovalReason.ttl
                if reason is None:
                    return current
                self._retire(key, current, reason)
            template = spawn()
            template.venv_id = venv_identity(venv)
            template.token = ""  # its task processes carry its mark: never scanned as orphans
            self._track(template)
            self._current[key] = template
            return template

    def _retire(self, key: Hashable, template: TemplateProcess, reason: RemovalReason) -> None:
        with self._lock:
            if self._current.get(key) is template:
                del self._current[key]
        self._drop(template, reason)

    def pids(self) -> list[int]:
        with self._lock:
            return [t.pid for t in self._current.values()]

    def close(self) -> None:
        """Hand every template to the pool's reaper (the worker is stopping). Task
        processes already forked are not theirs: they are stopped as the pool's."""
        with self._lock:
            current, self._current = self._current, {}
        for template in current.values():
            self._drop(template, RemovalReason.shutdown)


__all__ = ["TemplateProcess", "Templates", "TemplateLost", "TemplateTainted",
           "venv_identity"]
