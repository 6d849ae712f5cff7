"""The warm process pool of one Dask worker process (thread-safe).

A :class:`WarmProcess` is ``<venv>/bin/python -I -u runner`` bound to one bundle; it
runs one task at a time. The :class:`WarmPool` hands processes to task threads
(checkout → health check → task → checkin), spawns when none is idle, evicts idle ones
LRU when full or over the memory budget, retires them after MAX_PROCESS_REUSE tasks or
PROCESS_TTL seconds (only between tasks) and kills them on crash, timeout or memory
limit. While a task runs, the waiting thread itself watches the process: deadline, RSS of
the process tree (psutil, every TICK seconds), death (pidfd / waitid).

Retiring a process after its task (reuse limit, TTL) means waiting for it to exit; the
task's result must not wait for that, so retirements go to one reaper thread. A retiring
process keeps its slot until it is gone (MAX_WARM_PROCESSES bounds live processes), and
shutdown drains the reaper.

Each process works in its own scratch directory under the worker's TMPDIR (the bundle is
only on its ``sys.path``): relative writes of model code never reach the shared bundle
cache or another process. The directory goes when the process is stopped; a worker process
removes the ones its dead predecessors on this host left behind.

A task whose process is stopped by the worker's shutdown fails with WorkerStopping, not as
a crash; a process that cannot be started fails with the real errno, blaming the venv only
when exec'ing its interpreter says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib.util
import logging
import marshal
import os
import py_compile
import queue
import random
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from .errors import (EnvironmentBuildError, MemoryLimitExceeded, ModelOpsError, ProcessCrashed,
                     ProcessStartFailed, TaskTimeout, WorkerStopping)
from .runner import HEADER_SIZE, decode, encode, header
from .stats import RemovalReason, StatsRecorder, WarmStats
from .venvs import Venv, left_by_dead_local_process, owner_tag

log = logging.getLogger("modelops_runtime.pool")

RUNNER = Path(__file__).with_name("runner.py")
TICK = 0.05                        # s between liveness/deadline checks of a busy process
MEM_SAMPLE = 0.1                   # s between RSS samples of a busy process tree
LOG_KEEP = 256 * 1024              # bytes of each process's output kept in memory
TAIL_CHARS = 8000                  # characters of output attached to errors
PIPE_SIZE = 1 << 20                # larger pipes: fewer wakeups for big payloads
BASE_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME")
SCRATCH_PREFIX = "modelops-warm-"  # + <host>-<pid>-<random>: a warm process's working dir
# exec errors that mean the venv's interpreter is missing or unusable (anything else, e.g.
# EMFILE or ENOMEM, is a limit of the worker, not a fault of the venv)
VENV_ERRNOS = {errno.ENOENT, errno.ENOEXEC, errno.EACCES, errno.ENOTDIR, errno.ELOOP}
_LIMIT_HINTS = {
    errno.EMFILE: "raise the worker's open-file limit (ulimit -n) or lower "
                  "MODELOPS_MAX_WARM_PROCESSES (each warm process takes 5 of the worker's)",
    errno.ENFILE: "the node ran out of open files; lower MODELOPS_MAX_WARM_PROCESSES",
    errno.ENOMEM: "give the worker pod more memory or lower MODELOPS_MAX_WARM_PROCESSES / "
                  "set MODELOPS_POOL_MEMORY_BYTES",
    errno.EAGAIN: "the pod's process limit (pids) is reached; lower "
                  "MODELOPS_MAX_WARM_PROCESSES or raise the limit",
    errno.ENOSPC: "free space in the worker's TMPDIR",
    errno.EDQUOT: "free space in the worker's TMPDIR",
}
LIMIT_ERRNOS = frozenset(_LIMIT_HINTS)


def warm_env(venv: Venv, passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed environment of a warm process: the worker's secrets stay out."""
    allowed = set(BASE_ENV) | set(passthrough)
    env = {k: v for k, v in os.environ.items() if k in allowed or k.startswith("LC_")}
    env["VIRTUAL_ENV"] = str(venv.path)
    env["PATH"] = f"{venv.path / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


@functools.cache
def _runner_digest() -> str:
    return hashlib.sha256(RUNNER.read_bytes()).hexdigest()[:16]


_good_programs: dict[Path, tuple[int, int, int]] = {}  # compiled runner → stat when checked


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _loads_as_code(path: Path) -> bool:
    """A .pyc of this interpreter holding a code object (not truncated, not foreign)."""
    try:
        data = path.read_bytes()
        return (data[:4] == importlib.util.MAGIC_NUMBER
                and isinstance(marshal.loads(data[16:]), types.CodeType))
    except (OSError, ValueError, EOFError, TypeError):
        return False


def runner_program(venv: Venv) -> Path:
    """The runner compiled once into ``venv``: an interpreter started on a ``.py`` compiles
    it at every start (scripts are never cached), on a ``.pyc`` it runs it at once. The
    venv's interpreter is the worker's own (same bytecode magic). Named by the source's
    hash, so a changed runner is compiled anew; checked once per worker process before
    use and replaced if damaged. The source itself for a single-use venv (FORCE_FRESH_VENV:
    compiling first would not save anything) or a read-only one."""
    if venv.fresh:
        return RUNNER
    program = venv.path / f"modelops-runner-{_runner_digest()}.pyc"
    seen = _identity(program)
    if seen is not None and _good_programs.get(program) == seen:
        return program
    if seen is not None and _loads_as_code(program):
        _good_programs[program] = seen
        return program
    tmp = program.with_name(f".{program.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        py_compile.compile(str(RUNNER), cfile=str(tmp), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        os.replace(tmp, program)  # atomic: other worker processes may race us
    except (OSError, py_compile.PyCompileError) as exc:
        log.warning("cannot compile the runner into %s (%s); starting it from source",
                    venv.path, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return RUNNER
    if seen is not None:
        log.warning("replaced a damaged compiled runner in %s", venv.path)
    _good_programs[program] = _identity(program)
    return program


def jittered_reuse(limit: int) -> int:
    """Up to 10% fewer tasks (never below 90% of the limit, nor 1), so a batch of processes
    spawned together does not retire together."""
    return max(1, limit - random.randint(0, limit // 10))


def jittered_ttl(seconds: float) -> float:
    """Up to 10% shorter (floor: 90% of the TTL)."""
    return seconds * (1 - 0.1 * random.random())


def describe_exit(returncode: int | None) -> tuple[str, int | None, str | None]:
    """(human text, exit code, signal name) of a finished process."""
    if returncode is None:
        return "did not exit", None, None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}", None, name
    return f"exited with code {returncode}", returncode, None


def make_scratch() -> Path:
    """A new, empty working directory for one warm process, under the worker's TMPDIR:
    model code writing relative paths writes here, never into the shared bundle cache, and
    no other process sees it. Removed with the process (:meth:`WarmProcess.stop`)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))


def remove_dead_scratch() -> None:
    """Scratch directories of warm processes whose worker process (of this host) died
    without stopping them (a SIGKILLed worker cannot clean up)."""
    with contextlib.suppress(OSError):
        for entry in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
            if left_by_dead_local_process(entry.name[len(SCRATCH_PREFIX):]):
                shutil.rmtree(entry, ignore_errors=True)


def _reason(exc: OSError) -> tuple[str, str]:
    name = errno.errorcode.get(exc.errno or 0, "unknown errno")
    return f"{exc.strerror or exc} ({name})", name


def limit_error(exc: OSError, what: str) -> ProcessStartFailed:
    """A process or pipe the worker could not create for a reason of its own (open files,
    memory, process limits, TMPDIR), named with its errno and what to change."""
    reason, name = _reason(exc)
    hint = _LIMIT_HINTS.get(exc.errno or 0, "check the worker's limits (open files, "
                            "processes, memory) and its TMPDIR")
    return ProcessStartFailed(
        f"{what} failed: {reason}. This is a limit or fault of the Dask worker process, not "
        f"of the bundle or its venv: {hint}.", errno_name=name, strerror=exc.strerror)


def start_error(exc: OSError, venv: Venv, step: str) -> ModelOpsError:
    """The typed error for a warm process that could not be started: the venv's fault
    only if exec'ing its interpreter failed with an errno that means so."""
    if step == "exec" and exc.errno in VENV_ERRNOS and exc.filename == str(venv.python):
        reason, name = _reason(exc)
        return EnvironmentBuildError(
            f"cannot start a warm process: {venv.python}: {reason}. The venv {venv.path} is "
            "damaged (its interpreter is missing, not executable, or links to a Python that "
            "is gone); remove that directory and the next task rebuilds it.",
            requirements=[], uv_output="", errno_name=name, strerror=exc.strerror)
    what = {"pipes": "creating its pipes",
            "scratch": f"creating its working directory in {tempfile.gettempdir()}",
            "exec": f"starting {venv.python}"}[step]
    return limit_error(exc, f"cannot start a warm process: {what}")


class LogTail:
    """A warm process's stdout+stderr: one pipe, always drained by a thread into a bounded
    buffer (a full pipe would block the user's print and hang the task)."""

    def __init__(self, fd: int, keep: int = LOG_KEEP) -> None:
        self._fd = fd
        self._keep = keep
        self._buf = bytearray()
        self._total = 0
        self._eof = False
        self._lock = threading.Lock()
        os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name=f"modelops-log-{fd}")
        self._thread.start()

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

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Lost(Exception):
    """The process is gone (or was killed) during an exchange; ``error`` is for the user."""

    def __init__(self, reason: RemovalReason, error: ModelOpsError) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error


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
        self.worker_stopping = False  # set by WarmPool.shutdown before it signals us
        self.log = log
        self.max_tasks = max_tasks
        self.started = time.monotonic()
        self.expires_at = self.started + ttl
        self.last_used = self.started
        self.task_count = 0
        self.lost: RemovalReason | None = None
        self._req = request_fd
        self._resp = response_fd
        self._lifeline = lifeline_fd
        self._closed_at = 0.0
        self._stopped = False
        self._reap_lock = threading.Lock()  # killpg and reaping never interleave
        self._ps = psutil.Process(self.pid)
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # old kernel / sandbox: fall back to waitid polling
            self._pidfd = None

    # -- spawning --------------------------------------------------------------------

    @classmethod
    def spawn(cls, *, key: Hashable, venv: Venv, bundle_dir: Path, env: dict[str, str],
              max_tasks: int, ttl: float, start_timeout: float,
              popen: Callable[[Callable[[], subprocess.Popen]], subprocess.Popen]
              ) -> "WarmProcess":
        """Start a runner and wait for its hello. ``popen`` runs the fork in the pool's
        long-lived spawner thread (PR_SET_PDEATHSIG fires when the forking *thread* ends)."""
        fds: list[int] = []
        scratch: Path | None = None
        step = "pipes"
        try:  # every failure closes what was opened so far
            for _ in range(4):
                fds.extend(os.pipe())
            req_r, req_w, resp_r, resp_w, life_r, life_w, log_r, log_w = fds
            for fd in (req_w, resp_r):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            step = "scratch"
            scratch = make_scratch()
            step = "exec"
            cmd = [str(venv.python), "-I", "-u", str(runner_program(venv)),
                   "--request-fd", str(req_r), "--response-fd", str(resp_w),
                   "--lifeline-fd", str(life_r), "--parent-pid", str(os.getpid()),
                   "--bundle-dir", str(bundle_dir)]
            # the bundle is only on sys.path (-I keeps the cwd off it); the cwd is private
            proc = popen(lambda: subprocess.Popen(
                cmd, pass_fds=(req_r, resp_w, life_r), stdin=subprocess.DEVNULL,
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
        for fd in (req_r, resp_w, life_r, log_w):  # the child's ends
            os.close(fd)
        os.set_blocking(req_w, False)
        os.set_blocking(resp_r, False)
        try:
            log_tail = LogTail(log_r)  # starts a thread: may fail when the worker is at a limit
        except BaseException:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group id is ours
            proc.wait()
            for fd in (req_w, resp_r, life_w, log_r):
                os.close(fd)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self = cls(proc, key=key, venv=venv, request_fd=req_w, response_fd=resp_r,
                   lifeline_fd=life_w, log=log_tail, max_tasks=max_tasks, ttl=ttl,
                   scratch=scratch)
        try:
            hello = self.exchange(None, timeout=start_timeout, label="the runner's start")
        except Lost as lost:
            self.stop(graceful=False)
            how, code, sig = describe_exit(self.popen.returncode)
            if lost.reason is RemovalReason.timeout:
                how = f"it did not answer within {start_timeout:g}s"
            tail = self.log.tail()
            raise ProcessCrashed(
                f"a warm process could not start in venv {venv.path}: {how}. Its output:\n"
                f"{tail or '(none)'}\nCheck that the venv's interpreter works; remove "
                f"{venv.path} to have it rebuilt by the next task.",
                exit_code=code, signal_name=sig, pid=self.pid, log_tail=tail) from None
        if hello.get("op") != "hello":  # pragma: no cover - protocol guard
            self.stop(graceful=False)
            raise ProcessCrashed(f"warm process {self.pid} sent {hello!r} instead of hello",
                                 exit_code=None, signal_name=None, log_tail="")
        return self

    # -- talking ---------------------------------------------------------------------

    def run(self, request: dict, *, timeout: float | None, mem_limit: int | None,
            label: str) -> tuple[dict, int]:
        """Send one task; return (reply, log mark at task start). Raises :class:`Lost`."""
        self.task_count += 1
        self.last_used = time.monotonic()
        mark = self.log.mark()
        try:
            return self.exchange(request, timeout=timeout, mem_limit=mem_limit,
                                 label=label, mark=mark), mark
        except Lost:
            raise
        except BaseException:
            # anything else mid-exchange leaves the framing unknown: never reuse it
            self.stop(graceful=False)
            self.lost = RemovalReason.crash
            raise
        finally:
            self.last_used = time.monotonic()

    def health(self, timeout: float) -> RemovalReason | None:
        """Checkout health check of an idle process: None if it is alive and answers within
        ``timeout``, else why it must be replaced (it is then already stopped)."""
        if self.exited():
            self.stop(graceful=False)
            return RemovalReason.crash
        try:
            reply = self.exchange({"op": "ping"}, timeout=timeout, label="a health check")
        except Lost as lost:
            return RemovalReason.crash if lost.reason is RemovalReason.crash \
                else RemovalReason.unhealthy
        if reply.get("op") == "pong":
            return None
        self.stop(graceful=False)  # pragma: no cover - protocol guard
        return RemovalReason.unhealthy

    def exchange(self, request: dict | None, *, timeout: float | None,
                 mem_limit: int | None = None, label: str, mark: int | None = None) -> dict:
        """Send ``request`` (if any) and read one reply, watching the process meanwhile."""
        watch = _Watch(self, timeout, mem_limit, label, mark)
        if request is not None:
            codec, body = encode(request)
            self._send(memoryview(header(codec, len(body))), watch)
            self._send(memoryview(body), watch)
            del body
        head = self._recv(HEADER_SIZE, watch)
        data = self._recv(int.from_bytes(head[1:], "big"), watch)
        try:
            return decode(bytes(head[:1]), data)
        except Exception as exc:  # noqa: BLE001 - e.g. a class the worker cannot import
            return {"ok": False, "kind": "unreadable", "type": type(exc).__name__,
                    "message": str(exc), "traceback": ""}

    def _send(self, view: memoryview, watch: "_Watch") -> None:
        poller = select.poll()
        poller.register(self._req, select.POLLOUT)
        while view:
            try:
                view = view[os.write(self._req, view):]
                watch.check(alive=False)  # deadline and memory also while data flows
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise watch.died() from None
            poller.poll(TICK * 1000)
            watch.check()

    def _recv(self, n: int, watch: "_Watch") -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        pos = 0
        poller = select.poll()
        poller.register(self._resp, select.POLLIN)
        while pos < n:
            try:
                got = os.readv(self._resp, [view[pos:]])
            except BlockingIOError:
                poller.poll(TICK * 1000)
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

    def tree_rss(self) -> int:
        """Resident memory of the process and all its descendants, in bytes."""
        total = 0
        try:
            procs = [self._ps, *self._ps.children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _wait_exit(self, timeout: float) -> bool:
        if self._stopped:
            return True
        if self._pidfd is not None:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            poller.poll(max(0.0, timeout) * 1000)
            return self.exited()
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
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
        came first), TERM after up to 1 s, KILL after ``grace`` more. Only the thread owning
        the process calls this (it closes the pipes)."""
        if self._stopped:
            return describe_exit(self.popen.returncode)[0]
        if graceful:
            term_at = self.close_requests() + min(grace, 1.0)
            if not self._wait_exit(term_at - time.monotonic()):
                self.signal_group(signal.SIGTERM)
                self._wait_exit(term_at + grace - time.monotonic())
        with self._reap_lock:
            if not self._stopped:
                # descendants that left the process group are found by parentage while the
                # leader lives; once it has exited they belong to init (nothing to scan)
                try:
                    tree = [] if self.exited() else self._ps.children(recursive=True)
                except psutil.Error:
                    tree = []
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)  # leader not reaped: the id is ours
                for child in tree:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(30)
                _wait_gone(tree, timeout=10)  # gone when stop() returns
                self._stopped = True
        for fd in (self._req, self._resp, self._lifeline, self._pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.log.sync()
        self.remove_scratch()
        return describe_exit(self.popen.returncode)[0]

    def remove_scratch(self) -> None:
        """Remove the working directory (once the process tree is gone)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
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


class _Watch:
    """Deadline, memory limit and liveness checks while a thread waits on a process."""

    def __init__(self, proc: WarmProcess, timeout: float | None, mem_limit: int | None,
                 label: str, mark: int | None) -> None:
        self.proc = proc
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.mem_limit = mem_limit
        self.label = label
        self.mark = mark
        self.peak = 0
        self.next_sample = 0.0

    def check(self, alive: bool = True) -> None:
        now = time.monotonic()
        if alive and self.proc.exited():
            raise self.died()
        if self.mem_limit is not None and now >= self.next_sample:
            self.next_sample = now + MEM_SAMPLE
            rss = self.proc.tree_rss()
            self.peak = max(self.peak, rss)
            if rss > self.mem_limit:
                self.proc.stop(graceful=False)
                raise Lost(RemovalReason.mem_limit, MemoryLimitExceeded(
                    f"{self.label} used {_mb(self.peak)} (RSS of its process tree), over "
                    f"MODELOPS_MEM_LIMIT_BYTES={self.mem_limit} ({_mb(self.mem_limit)}); its "
                    f"warm process (pid {self.proc.pid}) was killed and will be replaced. "
                    "Reduce the model's memory use or raise the limit.",
                    limit_bytes=self.mem_limit, peak_bytes=self.peak, pid=self.proc.pid,
                    log_tail=self.proc.log.tail(self.mark)))
        if self.deadline is not None and now > self.deadline:
            self.proc.stop(graceful=False)
            raise Lost(RemovalReason.timeout, TaskTimeout(
                f"{self.label} did not finish within {self.timeout:g}s; its warm process "
                f"(pid {self.proc.pid}) was killed and will be replaced. Make the task "
                "faster or raise the time limit (MODELOPS_TASK_TIMEOUT).",
                timeout_s=self.timeout, pid=self.proc.pid,
                log_tail=self.proc.log.tail(self.mark)))

    def died(self) -> Lost:
        """The process ended by itself (EOF/EPIPE on its pipes, or it exited), or the
        worker is shutting down and stopped it."""
        self.proc._wait_exit(5.0)
        how = self.proc.stop(graceful=False)
        text, code, sig = describe_exit(self.proc.popen.returncode)
        tail = self.proc.log.tail(self.mark)
        if self.proc.worker_stopping:
            return Lost(RemovalReason.shutdown, WorkerStopping(
                f"{self.label} was interrupted because this Dask worker process is shutting "
                "down (a helm upgrade or rollout replacing the pod, a scale-down, a node "
                f"drain, or the worker told to close); its warm process (pid {self.proc.pid}) "
                "was stopped with it. Nothing is wrong with the task: Dask normally runs it "
                "again on another worker; if this error reached you, submit it again once "
                "workers are back.", pid=self.proc.pid, log_tail=tail))
        shown = tail if tail.strip() else "(the process wrote nothing)"
        return Lost(RemovalReason.crash, ProcessCrashed(
            f"the warm process (pid {self.proc.pid}) running {self.label} died: {how}. "
            "The task failed; the process is replaced and the worker is unaffected. A crash "
            "in native code, os._exit() or an external kill are the usual causes; the "
            f"process's last output:\n{shown}",
            exit_code=code, signal_name=sig, pid=self.proc.pid, log_tail=tail))


def rss_of_trees(procs: Iterable[WarmProcess]) -> dict[WarmProcess, int]:
    """RSS of each process's tree: one pass over the process table for parentage (a
    children() scan per process would be one pass *each*), memory read only for the
    processes in the trees. ~40 µs per process in the table."""
    procs = list(procs)
    if not procs:
        return {}
    kids: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter(["ppid"]):
        kids.setdefault(p.info["ppid"], []).append(p)
    out = {}
    for proc in procs:
        total, stack = 0, [proc._ps]
        while stack:
            member = stack.pop()
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
            stack.extend(kids.get(member.pid, ()))
        out[proc] = total
    return out


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


class WarmPool:
    """Warm processes of one Dask worker process, keyed by (bundle, venv)."""

    def __init__(self, *, max_processes: int, max_reuse: int, ttl: float,
                 memory_budget: int | None = None, stats: StatsRecorder | None = None,
                 health_timeout: float = 5.0, start_timeout: float = 120.0,
                 stop_grace: float = 5.0, housekeeping_period: float = 1.0) -> None:
        self.max_processes = max_processes
        self.max_reuse = max_reuse
        self.ttl = ttl
        self.memory_budget = memory_budget
        self.stats = stats or StatsRecorder()
        self.health_timeout = health_timeout
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._cond = threading.Condition()
        self._idle: OrderedDict[WarmProcess, None] = OrderedDict()  # LRU first
        self._busy: set[WarmProcess] = set()
        self._unpooled: set[WarmProcess] = set()
        self._retiring: set[WarmProcess] = set()  # handed to the reaper, not gone yet
        self._reserved = 0  # slots being spawned
        self._closed = False
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="modelops-spawn")
        self._reap_queue: queue.SimpleQueue[WarmProcess | None] = queue.SimpleQueue()
        self._reaper = threading.Thread(target=self._reap, daemon=True,
                                        name="modelops-pool-reaper")
        self._reaper.start()
        self._stop_event = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, args=(housekeeping_period,),
                                             daemon=True, name="modelops-pool-housekeeper")
        self._housekeeper.start()
        remove_dead_scratch()

    # -- spawning --------------------------------------------------------------------

    def spawn(self, *, key: Hashable, venv: Venv, bundle_dir: Path, env: dict[str, str],
              single_use: bool = False) -> WarmProcess:
        proc = WarmProcess.spawn(
            key=key, venv=venv, bundle_dir=bundle_dir, env=env,
            max_tasks=1 if single_use else jittered_reuse(self.max_reuse),
            ttl=jittered_ttl(self.ttl), start_timeout=self.start_timeout,
            popen=lambda fn: self._spawner.submit(fn).result())
        self.stats.incr("spawns")
        return proc

    # -- checkout / checkin ----------------------------------------------------------

    def acquire(self, key: Hashable, spawn: Callable[[], WarmProcess]) -> tuple[WarmProcess, bool]:
        """A healthy process for ``key`` and whether it was reused. Waits while the pool is
        full of busy processes; evicts the least recently used idle process of another key
        when full; spawns (outside the lock) into a reserved slot otherwise."""
        while True:
            candidate = victim = None
            with self._cond:
                while True:
                    self._check_open()
                    candidate = self._take_idle(key)
                    if candidate is not None:
                        self._busy.add(candidate)
                        break
                    if self._size() < self.max_processes:
                        self._reserved += 1
                        break
                    if self._idle:
                        victim = next(iter(self._idle))
                        del self._idle[victim]
                        self._reserved += 1
                        break
                    self._cond.wait()
            if victim is not None:
                self._remove(victim, RemovalReason.lru)
            if candidate is None:
                return self._spawn_reserved(spawn), False
            reason = candidate.health(self.health_timeout)
            if reason is None:
                self.stats.incr("reuses")
                return candidate, True
            log.warning("idle warm process %d failed its health check (%s); replacing it",
                        candidate.pid, reason.value)
            with self._cond:
                self._busy.discard(candidate)
            self._remove(candidate, reason)

    def _take_idle(self, key: Hashable) -> WarmProcess | None:
        now = time.monotonic()
        for proc in reversed(self._idle):  # most recently used first: warmest caches
            if proc.key == key and now < proc.expires_at:
                del self._idle[proc]
                return proc
        return None

    def _spawn_reserved(self, spawn: Callable[[], WarmProcess]) -> WarmProcess:
        try:
            proc = spawn()
        except BaseException:
            with self._cond:
                self._reserved -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._reserved -= 1
            self._busy.add(proc)
            closed = self._closed
        if closed:
            self.release(proc)
            self._check_open()
        return proc

    def release(self, proc: WarmProcess) -> None:
        """Check a process back in after a task: keep it warm, retire it, or drop it."""
        reason = proc.lost
        if reason is None and proc.task_count >= proc.max_tasks:
            reason = RemovalReason.reuse
        elif reason is None and time.monotonic() >= proc.expires_at:
            reason = RemovalReason.ttl
        with self._cond:
            self._busy.discard(proc)
            if reason is None and not self._closed:
                self._idle[proc] = None
                self._cond.notify_all()
                return
        if reason in (RemovalReason.reuse, RemovalReason.ttl):
            self._retire(proc, reason)
        elif reason is None or proc.worker_stopping:  # closed meanwhile / stopped by shutdown
            proc.stop(grace=self.stop_grace)
            self.stats.removed(RemovalReason.shutdown)
        else:
            self._remove(proc, reason)

    def _retire(self, proc: WarmProcess, reason: RemovalReason) -> None:
        """Retire a healthy process that is in no set: tell it to exit and let the reaper
        wait for that, so the caller (a task's thread) returns at once. Counted now."""
        proc.close_requests()  # before the hand-over: the reaper owns it afterwards
        with self._cond:
            handed = not self._closed  # after shutdown's drain request nobody would reap it
            if handed:
                self._retiring.add(proc)
                self._reap_queue.put(proc)
        if not handed:
            self._remove(proc, reason)
            return
        self.stats.removed(reason)
        log.debug("warm process %d retired: %s", proc.pid, reason.value)

    def _reap(self) -> None:
        """The reaper thread: finish retirements in hand-over order. Each process was told
        to exit when it was handed over, so they exit concurrently and the grace periods
        run from then, not from when the reaper gets to them. None ends the thread."""
        while (proc := self._reap_queue.get()) is not None:
            try:
                proc.stop(graceful=True, grace=self.stop_grace)
            except Exception:  # noqa: BLE001 - never let the reaper die; never leave it
                log.exception("stopping retired warm process %d failed; killing it", proc.pid)
                proc.signal_group(signal.SIGKILL)
            finally:
                with self._cond:
                    self._retiring.discard(proc)
                    self._cond.notify_all()  # its slot is free

    def track_unpooled(self, proc: WarmProcess) -> None:
        """A single-use process (FORCE_FRESH_VENV): never pooled, but stopped at shutdown."""
        with self._cond:
            self._unpooled.add(proc)

    def drop_unpooled(self, proc: WarmProcess) -> None:
        with self._cond:
            self._unpooled.discard(proc)
        if proc.worker_stopping:  # stopped by shutdown: not a crash to warn about
            proc.stop(grace=self.stop_grace)
            self.stats.removed(RemovalReason.shutdown)
            return
        self._remove(proc, proc.lost or RemovalReason.fresh_venv)

    def _remove(self, proc: WarmProcess, reason: RemovalReason) -> None:
        """Stop a process that is no longer in any set, count why, free its slot."""
        proc.stop(graceful=reason in (RemovalReason.reuse, RemovalReason.ttl, RemovalReason.lru,
                                      RemovalReason.memory_budget, RemovalReason.fresh_venv),
                  grace=self.stop_grace)
        self.stats.removed(reason)
        if reason in (RemovalReason.crash, RemovalReason.timeout, RemovalReason.mem_limit,
                      RemovalReason.unhealthy) and not self._closed:
            log.warning("warm process %d removed (%s); a new one replaces it on demand",
                        proc.pid, reason.value)
        else:
            log.debug("warm process %d removed: %s", proc.pid, reason.value)
        with self._cond:
            self._cond.notify_all()

    def _size(self) -> int:
        return len(self._idle) + len(self._busy) + len(self._retiring) + self._reserved

    def _check_open(self) -> None:
        if self._closed:
            raise WorkerStopping(
                "the warm process pool is shut down: this Dask worker process is stopping "
                "and takes no new tasks. Dask normally runs the task on another worker; if "
                "this error reached you, submit it again once workers are back.", pid=None)

    # -- housekeeping ----------------------------------------------------------------

    def _housekeep(self, period: float) -> None:
        while not self._stop_event.wait(period):
            try:
                self.housekeep()
            except Exception:  # noqa: BLE001 - never let the housekeeper die silently
                log.exception("warm pool housekeeping failed")

    def housekeep(self) -> None:
        """Retire idle processes past their TTL or dead, evict LRU over the memory budget."""
        now = time.monotonic()
        doomed: list[tuple[WarmProcess, RemovalReason]] = []
        with self._cond:
            for proc in list(self._idle):
                if proc.exited():
                    doomed.append((proc, RemovalReason.crash))
                elif now >= proc.expires_at:
                    doomed.append((proc, RemovalReason.ttl))
            for proc, _ in doomed:
                del self._idle[proc]
            if self.memory_budget is not None:
                procs = list(self._idle) + list(self._busy)
        for proc, reason in doomed:
            if reason is RemovalReason.ttl:
                self._retire(proc, reason)
            else:
                self._remove(proc, reason)
        if self.memory_budget is None:
            return
        rss = rss_of_trees(procs)
        total = sum(rss.values())
        while total > self.memory_budget:
            with self._cond:
                victim = next((p for p in self._idle if p in rss), None)
                if victim is None:
                    return  # only busy processes left: they finish first
                del self._idle[victim]
            log.info("pool RSS %s over MODELOPS_POOL_MEMORY_BYTES=%d: evicting idle warm "
                     "process %d", _mb(total), self.memory_budget, victim.pid)
            total -= rss[victim]
            self._remove(victim, RemovalReason.memory_budget)

    # -- observability and shutdown ----------------------------------------------------

    def snapshot(self) -> WarmStats:
        """Counters, size and memory now. Retiring processes (exiting, slot not yet free)
        are in neither ``size`` nor ``rss_bytes``."""
        with self._cond:
            procs = list(self._idle) + list(self._busy) + list(self._unpooled)
            busy = len(self._busy) + len(self._unpooled)
        return self.stats.snapshot(size=len(procs), busy=busy,
                                   rss_bytes=sum(rss_of_trees(procs).values()))

    def pids(self) -> list[int]:
        """Every warm process the pool is responsible for, retiring ones included."""
        with self._cond:
            return [p.pid for p in (*self._idle, *self._busy, *self._unpooled,
                                    *self._retiring)]

    def shutdown(self, reaper_timeout: float = 60.0) -> None:
        """Stop every warm process: TERM to each process group, KILL after the grace; then
        wait for the reaper to have finished every retirement."""
        with self._cond:
            self._closed = True
            idle = set(self._idle)
            procs = [*self._idle, *self._busy, *self._unpooled, *self._retiring]
            self._idle.clear()
            self._cond.notify_all()
            self._reap_queue.put(None)  # after every retirement handed over (under the lock)
        self._stop_event.set()
        for proc in procs:
            proc.worker_stopping = True  # before the signal: a task thread seeing the death
        for proc in procs:               # reports WorkerStopping, not a crash
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in procs:
            proc._wait_exit(max(0.0, deadline - time.monotonic()))
        busy = []
        for proc in procs:
            if proc in idle:
                proc.stop(graceful=False)
                self.stats.removed(RemovalReason.shutdown)
            else:  # busy: its task thread sees the death, reports it and closes the pipes;
                proc.signal_group(signal.SIGKILL)  # retiring: the reaper reaps it
                busy.append(proc)
        for proc in busy:  # the task thread removes it too, but the worker may exit first
            proc._wait_exit(5.0)
            proc.remove_scratch()
        if self._reaper is not threading.current_thread():
            self._reaper.join(reaper_timeout)
            if self._reaper.is_alive():  # pragma: no cover - stop() itself is bounded
                log.error("the warm pool's reaper did not finish within %gs", reaper_timeout)
        self._spawner.shutdown(wait=False)
        if self._housekeeper is not threading.current_thread():
            self._housekeeper.join(5)


__all__ = ["WarmPool", "WarmProcess", "LogTail", "Lost", "warm_env", "jittered_reuse",
           "jittered_ttl", "describe_exit", "make_scratch", "start_error", "limit_error"]
