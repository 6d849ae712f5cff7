"""How a warm process confines itself and ends with its parent.

Part of the runner program (runner.py loads it; stdlib only, no imports of ours). Before
any bundle code runs, a warm process (and again each task process forked from a template):

- arms PR_SET_PDEATHSIG, so the kernel kills it when its parent dies
  (:func:`set_parent_death_signal`), and sets no_new_privs;
- confines itself with Landlock (:func:`sandbox`): it may write only in its scratch
  directory (its cwd, also its TMPDIR) and /dev, never in the bundle cache or a venv;
- caps its data size (:func:`cap_data`, RLIMIT_DATA) as the memory limit's backstop;
- starts the lifeline thread (:func:`start_lifeline`): EOF on the lifeline pipe means the
  worker is gone, even while the process is busy in user code.

Ending takes its process group with it (:func:`die_with_group`): a warm process is a
session leader, so its own children end too.
"""

import _thread
import os
import sys
from _signal import SIGKILL  # the C half of `signal`, already loaded; `signal` adds enum


def die_with_group() -> None:
    try:
        os.killpg(os.getpgrp(), SIGKILL)
    finally:
        os._exit(1)


def set_parent_death_signal(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG: the kernel kills us when the parent dies, even while user code
    holds the GIL (the lifeline thread needs it). Armed before any user code runs; ctypes
    is the one import here that is not free (~1.5 ms), and the only stdlib way to it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (the worker set it too)
        except Exception:  # noqa: BLE001 - best effort: the lifeline pipe is the main watch
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        die_with_group()


# Landlock (Linux >= 5.13): what the sandbox takes away is every kind of write
_LL_WRITE_FILE, _LL_REMOVE = 1 << 1, (1 << 4) | (1 << 5)
_LL_MAKE = sum(1 << bit for bit in range(6, 13))     # char, dir, reg, sock, fifo, block, sym
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14             # ABI 2, ABI 3
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch


def sandbox(writable: tuple[str, ...]) -> str:
    """Confine this process (and everything it starts) with Landlock: it may read anything
    it could before, but create, write, truncate, rename or remove files only beneath
    ``writable`` (its scratch directory and /dev). So bundle code cannot change the
    pod's bundle cache or venvs, whatever their modes and whatever it chmods. Returns ''
    once applied, else why not (an old kernel or a seccomp profile without the calls:
    the process then runs unconfined, as before)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, 1)  # 1 = LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return f"Landlock is not available ({os.strerror(ctypes.get_errno())})"
    handled = _LL_WRITE_FILE | _LL_REMOVE | _LL_MAKE
    handled |= (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)  # struct landlock_ruleset_attr, first field only
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), 8, 0)
    if ruleset < 0:
        return f"cannot create a Landlock ruleset ({os.strerror(ctypes.get_errno())})"
    try:
        for path in writable:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:  # e.g. a configured directory that does not exist
                sys.stderr.write(f"modelops runner: {path} stays read-only: {exc}\n")
                continue
            try:  # struct landlock_path_beneath_attr (packed): u64 allowed_access, s32 fd
                rule = ctypes.create_string_buffer(
                    handled.to_bytes(8, sys.byteorder) + fd.to_bytes(4, sys.byteorder), 12)
                if libc.syscall(_SYS_ADD_RULE, ruleset, 1, rule, 0) < 0:
                    return f"cannot add a Landlock rule ({os.strerror(ctypes.get_errno())})"
            finally:
                os.close(fd)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required by landlock_restrict_self
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) < 0:
            return f"cannot enforce the Landlock ruleset ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return ""


def cap_data(limit: int) -> None:
    """RLIMIT_DATA: the hard backstop of the memory limit. An allocation past it fails with
    MemoryError at once, however fast it came (the pool samples memory only every 100 ms).
    RLIMIT_DATA, not RLIMIT_AS: it leaves out shared libraries and reservations that are
    not writable (e.g. malloc arenas), so imports like numpy's are unaffected."""
    import resource  # C extension, ~0.1 ms; only with a memory limit

    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def start_lifeline(fd: int) -> None:
    """The lifeline thread (``_thread``: `threading` costs milliseconds per start)."""
    _thread.start_new_thread(_watch_lifeline, (fd,))


def _watch_lifeline(fd: int) -> None:
    """Block on the lifeline pipe; EOF means the worker process is gone (even if we missed
    it until now)."""
    try:
        while os.read(fd, 1):
            pass
    except BaseException:  # noqa: BLE001 - whatever went wrong, the watch must not vanish
        pass
    die_with_group()
