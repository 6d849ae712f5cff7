"""Running uv for the venv store: its binary, its environment (never the worker's whole
one: a build backend uv runs sees only this), a parent-death signal for it, and a session
of its own, so that a timeout or :class:`UvAbort` kills uv with everything it started.

- covers: the error a failed uv run raises, transient (killed by a signal, out of memory,
  out of disk, the network) or permanent (the resolver's verdict).
- does not: retry or remember failures (store.py does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ....errors import EnvironmentBuildError, WorkerStopping

_UV_MESSAGE_CHARS = 4000

# uv's environment besides UV_* and LC_*: the warm processes' base allow-list (process.py's
# BASE_ENV) plus what reaching a package index takes
BUILD_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy")


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _die_with_parent():
    """A preexec_fn that arms PR_SET_PDEATHSIG (SIGKILL) in the child: uv must not outlive a
    SIGKILLed worker and go on writing into a build directory that the next builder
    removes. It fires when the forking *thread* ends; the task thread forking uv waits for
    it. Resolved here, so that the child only makes one foreign call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def uv_env(default_cache: Path, passthrough: Sequence[str] = ()) -> dict[str, str]:
    """uv's environment: the warm processes' allow-list plus uv's own UV_* variables and
    what reaching an index takes (CA bundle, proxies). A build backend uv runs (only
    with allow_sdist_builds) sees nothing else of the worker's environment."""
    allowed = set(BUILD_ENV) | set(passthrough)
    env = {k: v for k, v in os.environ.items()
           if k in allowed or k.startswith(("UV_", "LC_"))}
    env.setdefault("UV_CACHE_DIR", str(default_cache))
    env.setdefault("UV_LINK_MODE", "hardlink")
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env["UV_NO_PROGRESS"] = "1"
    return env


class UvAbort:
    """Stops one venv build from another thread (the worker's shutdown): :meth:`abort` kills
    the uv process running for it, with its whole process group (build backends included),
    and every later uv step of the build is refused. ``path``: the build's directory, once
    the store named it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._event = threading.Event()
        self.aborted = False
        self.path: Path | None = None

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._event.set()
            for proc in self._running:
                _kill_group(proc)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`abort`; True if it was called."""
        return self._event.wait(timeout)

    def _started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(proc)
            if self.aborted:
                _kill_group(proc)

    def _ended(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL uv's process group. Only while uv is not reaped: until then its pid, which is
    the group's id, cannot name anyone else's group."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_uv(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float,
           abort: UvAbort | None = None) -> subprocess.CompletedProcess:
    """Run uv to completion in a session of its own, its output captured. On a timeout (then
    ``subprocess.TimeoutExpired`` is raised), an abort or any error here, the whole process
    group is killed and reaped before this returns."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_die_with_parent())
    if abort is not None:
        abort._started(proc)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # timeout, KeyboardInterrupt…: uv must not go on alone
            _kill_group(proc)
            proc.communicate()
            raise
    finally:
        if abort is not None:
            abort._ended(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# uv's words for a failure that says nothing about the requirements: the build may well
# succeed when tried again (a full disk freed by garbage collection, an index back online)
_DISK_WORDS = ("no space left on device", "os error 28", "disk quota exceeded",
               "os error 122")
_NETWORK_WORDS = ("failed to fetch", "error sending request", "connection refused",
                  "connection reset", "dns error", "failed to lookup address",
                  "tcp connect error", "timed out", "operation timed out",
                  "network is unreachable", "failed to download", "request failed after")


def transient_cause(proc: subprocess.CompletedProcess, output: str) -> str | None:
    """Why a failed uv run is transient (worth retrying, never remembered as the bundle's
    fault), or None when it is permanent (a resolver error: no such version, a conflict)."""
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in {
            s.value for s in signal.Signals} else f"signal {-proc.returncode}"
        oom = (" — what the kernel's OOM killer sends when the pod or node is out of "
               "memory" if proc.returncode == -signal.SIGKILL else "")
        return f"uv was killed by {sig}{oom}"
    lower = output.lower()
    if "no solution found" in lower:  # the resolver's verdict, whatever it fetched on the way
        return None
    if any(w in lower for w in _DISK_WORDS):
        return "out of disk: uv could not write (no space left on device or quota exceeded)"
    if "memory allocation" in lower or "out of memory" in lower:
        return "out of memory: uv could not allocate memory"
    if any(w in lower for w in _NETWORK_WORDS):
        return "a network failure: uv could not reach the package index"
    return None


def uv_failed(args: Sequence[str], proc: subprocess.CompletedProcess,
              requirements: Sequence[str]) -> EnvironmentBuildError:
    """The error a failed uv step of a venv build raises: what uv said, whether it was
    transient (``transient``: the cause) or permanent, and what to do."""
    output = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    output = output[-_UV_MESSAGE_CHARS:]
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    what = (f"could not build the bundle's environment for "
            f"[{', '.join(requirements) or 'no dependencies'}]: ")
    cause = transient_cause(proc, output)
    if cause is not None:
        return EnvironmentBuildError(
            f"{what}a transient failure, not a fault of the requirements: {cause}. "
            f"`uv {' '.join(args[:2])}` failed ({how}):\n{output}\n"
            "Nothing was published and the failure is not remembered: the next task "
            "builds again. If it keeps happening, give the worker more memory or disk "
            "(worker.resources, the venv cache volume) or check that the package index "
            "configured with UV_* variables is reachable.",
            requirements=list(requirements), uv_output=output, transient=cause)
    wheels_only = ("source distributions are not built (wheels only): publish a wheel "
                   "of every dependency on the index, or opt in with "
                   "worker.executor.allowSdistBuilds=true "
                   "(MODELOPS_ALLOW_SDIST_BUILDS); "
                   if "--no-build" in args and "build" in output.lower() else "")
    return EnvironmentBuildError(
        f"{what}{wheels_only}a permanent failure (uv could not resolve or install the "
        f"requirements as written): `uv {' '.join(args[:2])}` failed ({how}):\n{output}\n"
        "Fix the bundle's requirements (names and versions must exist on the "
        "configured index) or the UV_* index settings of the worker.",
        requirements=list(requirements), uv_output=output, transient=None)


def stopped(requirements: Sequence[str]) -> WorkerStopping:
    """The error of a venv build stopped by :meth:`UvAbort.abort` (the worker's shutdown)."""
    return WorkerStopping(
        f"the venv build for [{', '.join(requirements) or 'no dependencies'}] was stopped: "
        "this Dask worker process is shutting down and takes no new tasks. Dask normally "
        "runs the task on another worker; if this error reached you, submit it again once "
        "workers are back.", pid=None)
