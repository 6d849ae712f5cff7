"""One warm process: ``<venv>/bin/python -I -u runner`` bound to one bundle, spawned,
talked to over framed pipes while a :class:`~.watch.Watch` checks it, and stopped with
everything it started. Used by one thread at a time; the pool decides who."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

import psutil

from ...errors import ProcessCrashed
from ..counters import RemovalReason
from .failures import Lost, describe_exit, start_error
from .runner.frames import HEADER_SIZE, NO_TEMPLATE, TOKEN_VAR, encode, header
from .logtail import LogTail, OutputPoll
from .memory import MemorySampler, tree_pids
from .guard import GUARD, Guarded, warn_unguarded
from .lifeline import aim_lifeline, arm_lifeline
from .orphans import adopted_descendants, reap, wait_gone
from .runner.program import runner_program
from .decode import decode_reply
from .scratch import make_scratch
from .venvs.store import Venv
from .watch import TICK, Watch

log = logging.getLogger("modelops_runtime.pool")

PIPE_SIZE = 1 << 20                # larger pipes: fewer wakeups for big payloads
BASE_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME")
# what numeric libraries compute with (kernels, instruction sets), not secrets: a warm
# process computes as the worker (and executor=direct) would. OPENBLAS_CORETYPE alone
# changes scipy's solve_ivp in the last bit (tests/realmodels found it).
NUMERIC_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
               "MKL_DEBUG_CPU_TYPE", "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")


def data_cap(mem_limit: int | None) -> int:
    """The runner's hard cap on its data size (RLIMIT_DATA, 0: none) for a tree limit of
    ``mem_limit``: the backstop against a spike between two samples. Twice the limit plus
    256 MiB, because the cap counts address space reserved but never touched (thread
    stacks, BLAS buffers), which the sampler rightly does not."""
    return 0 if mem_limit is None else 2 * mem_limit + (256 << 20)


def warm_env(venv: Venv, passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed environment of a warm process: the worker's secrets stay out."""
    allowed = set(BASE_ENV) | set(NUMERIC_ENV) | set(passthrough)
    env = {k: v for k, v in os.environ.items() if k in allowed or k.startswith("LC_")}
    env["VIRTUAL_ENV"] = str(venv.path)
    env["PATH"] = f"{venv.path / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


class WarmProcess:
    """One long-lived runner process in a venv, bound to one bundle. Used by one thread at a
    time (the pool guarantees it)."""

    def __init__(self, popen: subprocess.Popen, *, key: Hashable, venv: Venv, request_fd: int,
                 response_fd: int, lifeline_fd: int, log: LogTail, max_tasks: int,
                 ttl: float, scratch: Path | None = None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.key = key
        self.venv = venv
        self.scratch = scratch  # its working directory, removed by stop()
        # ... or handed here instead (a template's task directories, scratch.TaskDirs) if
        # no process but itself ever ran in it
        self.scratch_done: Callable[[Path], None] | None = None
        self.worker_stopping = False  # set by WarmPool.shutdown before it signals us
        self.log = log
        self.max_tasks = max_tasks
        self.started = time.monotonic()
        self.expires_at = self.started + ttl
        self.last_used = self.started
        self.task_count = 0
        self.lost: RemovalReason | None = None
        self.reply_types: frozenset[str] = frozenset()  # the bundle's declared ones
        self.memory_exceeded: int | None = None  # peak, set by the sampler that killed it
        self.sampler: MemorySampler | None = None  # watches its memory during tasks
        self.token = ""  # MODELOPS_WARM_PROCESS of its environment: marks its descendants
        self.imported: object = None  # forked from a template: what its task imported
        self.guarded: Guarded | None = None  # the signal guard answering for it (guard.py)
        self.max_processes: int | None = None  # descendants alive at once (the guard's)
        self.doubt: object = ""  # ... and why it may have observed more than a new process
        self._req = request_fd
        self._resp = response_fd
        self._lifeline = lifeline_fd
        self._closed_at = 0.0
        self._stopped = False
        self._reap_lock = threading.Lock()  # killpg and reaping never interleave
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # old kernel / sandbox: fall back to waitid polling
            self._pidfd = None

    # -- spawning --------------------------------------------------------------------

    @classmethod
    def spawn(cls, *, key: Hashable, venv: Venv, bundle_dir: Path, env: dict[str, str],
              max_tasks: int, ttl: float, start_timeout: float,
              popen: Callable[[Callable[[], subprocess.Popen]], subprocess.Popen],
              mem_limit: int | None = None, sampler: MemorySampler | None = None,
              template: str = NO_TEMPLATE,
              max_processes: int | None = None) -> "WarmProcess":
        """Start a runner and wait for its hello. ``popen`` runs the fork in the pool's
        long-lived spawner thread (PR_SET_PDEATHSIG fires when the forking *thread* ends).
        With ``mem_limit`` the runner caps its own data size (see :func:`data_cap`). With
        ``template`` (a module) it is a template (template.py): its request channel is a
        socket that carries the pipes of the processes it forks."""
        token = uuid.uuid4().hex
        env = {**env, TOKEN_VAR: token}
        fds: list[int] = []
        scratch: Path | None = None
        step = "pipes"
        try:  # every failure closes what was opened so far
            if template == NO_TEMPLATE:
                fds.extend(os.pipe())
            else:  # (read end, write end) as for the pipe: the runner's end first
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                fds.extend((theirs.detach(), ours.detach()))
            for _ in range(3):
                fds.extend(os.pipe())
            theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # the guard's
            fds.extend((theirs.detach(), ours.detach()))
            req_r, req_w, resp_r, resp_w, life_r, life_w, log_r, log_w, guard_r, guard_w = fds
            for fd in (req_w, resp_r):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            step = "scratch"
            scratch = make_scratch()
            step = "exec"
            cmd = [str(venv.python), "-I", "-u", str(runner_program(venv)),
                   "--request-fd", str(req_r), "--response-fd", str(resp_w),
                   "--lifeline-fd", str(life_r), "--parent-pid", str(os.getpid()),
                   "--data-limit", str(data_cap(mem_limit)), "--bundle-dir", str(bundle_dir),
                   "--template", template, "--guard-fd", str(guard_r)]
            arm_lifeline(life_r, template == NO_TEMPLATE)  # a template's is a thread (clone.py)
            # the bundle is only on sys.path (-I keeps the cwd off it); the cwd is private
            proc = popen(lambda: subprocess.Popen(
                cmd, pass_fds=(req_r, resp_w, life_r, guard_r, *venv.hold_fds), stdin=subprocess.DEVNULL,
                stdout=log_w, stderr=log_w, env=env, cwd=scratch, start_new_session=True))
        except BaseException as exc:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            if isinstance(exc, OSError):
                raise start_error(exc, venv, step) from exc
            raise
        aim_lifeline(life_r, proc.pid)  # (no-op unless armed)
        for fd in (req_r, resp_w, life_r, log_w, guard_r):  # the child's ends
            os.close(fd)
        os.set_blocking(req_w, False)
        os.set_blocking(resp_r, False)
        try:
            log_tail = LogTail(log_r)  # starts a thread: may fail when the worker is at a limit
        except BaseException:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group id is ours
            proc.wait()
            for fd in (req_w, resp_r, life_w, log_r, guard_w):
                os.close(fd)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self = cls(proc, key=key, venv=venv, request_fd=req_w, response_fd=resp_r,
                   lifeline_fd=life_w, log=log_tail, max_tasks=max_tasks, ttl=ttl,
                   scratch=scratch)
        self.token, self.sampler, self.max_processes = token, sampler, max_processes
        # its listener is answered from the moment it arrives, not from its hello: a new
        # process it starts meanwhile must not wait on a worker that is not listening yet
        self.guarded = GUARD.expect(self.pid, token, socket.socket(fileno=guard_w),
                                    max_processes, template=template != NO_TEMPLATE)
        try:
            hello = self.exchange(None, timeout=start_timeout, label="the runner's start")
        except Lost as lost:
            self.stop(graceful=False)  # (and the guard forgets it)
            how, code, sig = describe_exit(self.popen.returncode)
            if lost.reason is RemovalReason.timeout:
                how = f"it did not answer within {start_timeout:g}s"
            tail = self.log.tail()
            raise ProcessCrashed(
                f"a warm process could not start in venv {venv.path}: {how}. Its output:\n"
                f"{tail or '(none)'}\nCheck that the venv's interpreter works; remove "
                f"{venv.path} to have it rebuilt by the next task.",
                exit_code=code, signal_name=sig, pid=self.pid, log_tail=tail) from None
        self.take_guard(hello)
        if hello.get("op") != "hello":  # pragma: no cover - protocol guard
            self.stop(graceful=False)
            raise ProcessCrashed(f"warm process {self.pid} sent {hello!r} instead of hello",
                                 exit_code=None, signal_name=None, log_tail="")
        return self

    def take_guard(self, hello: dict) -> None:
        """After its ``hello``: its listener came before it (and is answered since); none:
        the hello says why (logged once)."""
        if self.guarded is not None and not GUARD.settle(self.guarded):
            self.guarded = None
            warn_unguarded(str(hello.get("signals") or "the runner sent no guard"))

    # -- talking ---------------------------------------------------------------------

    def run(self, request: dict, *, timeout: float | None, mem_limit: int | None,
            label: str, tasks: int = 1) -> tuple[dict, int]:
        """Send one task (or a batch of ``tasks``); return (reply, log mark at task start).
        Raises :class:`Lost`."""
        self.task_count += tasks
        self.last_used = time.monotonic()
        mark = self.log.mark()
        watched = mem_limit is not None and self.sampler is not None
        if watched:
            self.sampler.watch(self, mem_limit)
        try:
            reply = self.exchange(request, timeout=timeout, mem_limit=mem_limit,
                                  label=label, mark=mark)
            self.end_descendants()
            return reply, mark
        except Lost:
            raise
        except BaseException:
            # anything else mid-exchange leaves the framing unknown: never reuse it
            self.kill()
            self.lost = RemovalReason.crash
            raise
        finally:
            if watched:
                self.sampler.unwatch(self)
            self.last_used = time.monotonic()

    def end_descendants(self, timeout: float = 10.0) -> None:
        """After a task: kill every process it started and that still lives -- children,
        grandchildren, daemons that left their session (the runner is their subreaper, so
        they are in its tree; the guard keeps a task from turning that off) and, in an
        unguarded process, orphans that reached the worker anyway (by its mark) --
        before the process runs anything else. Bounded: a tree that does not empty in
        ``timeout`` s retires the process."""
        guarded = self.guarded
        if guarded is not None:  # every new process of its tree was asked of the guard
            if not guarded.forks:
                return  # none since the last task's end: nothing to end (no /proc reads)
            guarded.forks = 0
        deadline = time.monotonic() + timeout
        while True:
            alive = [pid for pid in tree_pids(self.pid)[1:] if not _zombie(pid)]
            if self.guarded is None:  # else its subreaper bit cannot be turned off
                alive += [p.pid for p in adopted_descendants(self.token, owner=self.pid)]
            if not alive:
                return
            if time.monotonic() >= deadline:
                log.warning("warm process %d: %d process(es) its task started did not end; "
                            "it is retired", self.pid, len(alive))
                self.lost = RemovalReason.unhealthy
                return
            for pid in alive:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            reap(psutil_procs(alive), timeout=0.05)  # those adopted by the worker

    def take_refused_processes(self) -> int:
        """New processes the guard refused this task at the limit (and forget them)."""
        guarded = self.guarded
        if guarded is None or not guarded.refused_processes:
            return 0
        refused, guarded.refused_processes = guarded.refused_processes, 0
        return refused

    def health(self, timeout: float) -> RemovalReason | None:
        """Checkout health check of an idle process: None if it is alive and answers within
        ``timeout``, else why it must be replaced (the pool then stops it)."""
        if self.exited():
            return RemovalReason.crash
        try:
            reply = self.exchange({"op": "ping"}, timeout=timeout, label="a health check")
        except Lost as lost:
            return RemovalReason.crash if lost.reason is RemovalReason.crash \
                else RemovalReason.unhealthy
        if reply.get("op") == "pong":
            return None
        return RemovalReason.unhealthy  # pragma: no cover - protocol guard

    def exchange(self, request: dict | None, *, timeout: float | None,
                 mem_limit: int | None = None, label: str, mark: int | None = None) -> dict:
        """Send ``request`` (if any) and read one reply, watching the process meanwhile."""
        watch = Watch(self, timeout, mem_limit, label, mark)
        if request is not None:
            codec, body = encode(request)
            self._send(memoryview(header(codec, len(body))), watch)
            self._send(memoryview(body), watch)
            del body
        head = self._recv(HEADER_SIZE, watch)
        data = self._recv(int.from_bytes(head[1:], "big"), watch)
        try:
            return decode_reply(bytes(head[:1]), data, self.reply_types)
        except Exception as exc:  # noqa: BLE001 - e.g. a class the worker cannot import
            return {"ok": False, "kind": "unreadable", "type": type(exc).__name__,
                    "message": str(exc), "traceback": ""}

    def _send(self, view: memoryview, watch: "Watch") -> None:
        poller = OutputPoll(self.log, self._req, select.POLLOUT)
        while view:
            try:
                view = view[os.write(self._req, view):]
                watch.check(alive=False)  # deadline and memory also while data flows
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise watch.died() from None
            poller.wait(TICK)
            watch.check()

    def _recv(self, n: int, watch: "Watch") -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        pos = 0
        poller = OutputPoll(self.log, self._resp, select.POLLIN)
        while pos < n:
            try:
                got = os.readv(self._resp, [view[pos:]])
            except BlockingIOError:
                poller.wait(TICK)
                watch.check()
                continue
            if got == 0:
                raise watch.died()
            pos += got
            watch.check(alive=False)
        return buf

    # -- state -----------------------------------------------------------------------

    def exited(self) -> bool:
        """True once the process has ended (does not reap it)."""
        if self._stopped:
            return True
        try:
            return os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def exit_status(self) -> int | None:
        """The return code (negative: the signal) once it has exited, without reaping it."""
        if self._stopped:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.returncode
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def kill(self) -> None:
        """SIGKILL the process group, from any thread; the reaper stops it for good."""
        self.signal_group(signal.SIGKILL)

    def wait_exit(self, timeout: float) -> bool:
        if self._stopped:
            return True
        deadline = time.monotonic() + timeout
        poller = OutputPoll(self.log, self._pidfd, select.POLLIN)  # (and what it prints)
        while not self.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._pidfd is None and self.log.polled() is None:
                time.sleep(min(left, 0.01))  # no pidfd: polled by waitid
            else:
                poller.wait(left if self._pidfd is not None else min(left, 0.01))
        return True

    def signal_group(self, sig: int) -> None:
        """Signal the process's session (its own children included). Only called before
        the leader is reaped, so the group id cannot have been reused."""
        with self._reap_lock:
            if self._stopped:
                return
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def close_requests(self) -> float:
        """Close the request pipe: an idle runner sees EOF and returns. Returns when it was
        closed (a graceful :meth:`stop` counts its grace periods from then)."""
        if self._req >= 0:
            with contextlib.suppress(OSError):
                os.close(self._req)
            self._req = -1
            self._closed_at = time.monotonic()
        return self._closed_at

    def stop(self, *, graceful: bool = True, grace: float = 5.0) -> str:
        """End the process and everything it started; return how it ended. Graceful: EOF on
        the request pipe (the runner returns; counted from :meth:`close_requests` if that
        came first), TERM after up to 1 s, KILL after ``grace`` more. Only the pool's reaper
        (or its exit watch) calls this (it closes the pipes), or :meth:`spawn` before the
        pool has the process.

        Descendants: those still in its tree are found by parentage while it lives; those
        orphaned (it died first, or they were double-forked) were adopted by the worker
        process (a child subreaper, see :func:`become_subreaper`) and are found among its
        children by the _MODELOPS_WARM_PROCESS mark in their environment."""
        if self._stopped:
            return describe_exit(self.popen.returncode)[0]
        if graceful:
            term_at = self.close_requests() + min(grace, 1.0)
            if not self.wait_exit(term_at - time.monotonic()):
                self.signal_group(signal.SIGTERM)
                self.wait_exit(term_at + grace - time.monotonic())
        alone = self.alone
        with self._reap_lock:
            if not self._stopped:
                # descendants that left the process group are found by parentage while the
                # leader lives; once it has exited they belong to init (nothing to scan)
                try:
                    # (made here, not at start: not reaped yet, its pid is still its own)
                    tree = [] if alone or self.exited() else \
                        psutil.Process(self.pid).children(recursive=True)
                except psutil.Error:
                    tree = []
                adopted = [] if alone else adopted_descendants(self.token, owner=self.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)  # leader not reaped: the id is ours
                for child in (*tree, *adopted):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(30)
                wait_gone(tree, timeout=10)  # gone when stop() returns
                # ours now (adopted, or reparented when their parent died): reap them
                reap([*tree, *adopted], timeout=10)
                self._stopped = True
        alone = self.alone  # (nothing but itself ever ran in its scratch)
        if self.guarded is not None:
            GUARD.remove(self.guarded)
            self.guarded = None
        for name in ("_req", "_resp", "_lifeline", "_pidfd"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            setattr(self, name, -1 if name != "_pidfd" else None)
        self.log.sync()
        self.log.close()  # (one a thread drains is closed by it)
        self.remove_scratch(alone)
        return describe_exit(self.popen.returncode)[0]

    @property
    def alone(self) -> bool:
        """Guarded, and no new process ever let through: it has no descendant, no orphan
        (stopping it waits for nothing but itself)."""
        return self.guarded is not None and not self.guarded.spawned

    def exit_fd(self) -> int | None:
        """An fd readable once the process has exited (its pidfd; None: none, or it is
        stopped). Not to be closed: :meth:`stop` closes it."""
        return None if self._stopped else self._pidfd

    def remove_scratch(self, alone: bool = False) -> None:
        """Remove the working directory (once the process tree is gone), or hand it to
        ``scratch_done`` if the process was ``alone`` (nothing else ever ran in it)."""
        if self.scratch is not None and self.scratch_done is not None and alone:
            self.scratch_done(self.scratch)
        elif self.scratch is not None:
            try:  # most tasks leave it empty: one call
                os.rmdir(self.scratch)
            except OSError:
                shutil.rmtree(self.scratch, ignore_errors=True)


def _zombie(pid: int) -> bool:
    """``pid`` has exited (a zombie until its parent waits) or is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def psutil_procs(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found
