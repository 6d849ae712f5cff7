"""The template's half of the runner program (MAX_PROCESS_REUSE=1 with
FRESH_PROCESS_FROM=template); runner.py loads it only in a template. Stdlib only.

A template has imported one entrypoint module of the bundle (and so its dependencies) and
runs nothing else; for each task the worker sends it, over a socket, the four pipe ends of
a new task process, and it forks one. The fork is doubled: the middle process exits at
once, so the task process is adopted by the worker (a child subreaper, see orphans.py),
which then waits for it, signals its group and reads its exit status like any process it
spawned. The task process makes itself a session leader, moves onto its own pipes,
scratch directory and mark, arms PR_SET_PDEATHSIG against the worker and starts its own
lifeline thread, then runs the runner's ordinary loop. What fork does not renew is in the
README ("fresh-process from a template").
"""

import marshal
import os
import sys

# The runner's siblings this module uses: a program started with -I cannot import them,
# so runner.py's loader sets these once this file has run (see runner.py ``_load``).
frames = confine = None

REPARENT_WAIT = 5.0  # s a forked task process waits to be adopted by the worker

# why the template runs without the signal guard ('': it has one). A task process keeps
# the template's filter (a process can have only one listener): the worker answers its
# calls as its own, by its place in the process tree (guard.py)
unguarded = ""

_modules_at_fork: frozenset = frozenset()  # what the template had imported
_import_failed: set = set()  # learned names the template could not import (not retried)


def serve_forks(sock_fd: int, response_fd: int, lifeline_fd: int, worker_pid: int,
                module: str, roots: tuple | None) -> tuple[int, int]:
    """The template's loop: import ``module`` once, then fork a task process per order.
    Returns only in a task process (its request and response fds); the template itself
    exits when the worker closes the socket. ``roots``: (writable, readable) beside its
    scratch directory, for each task process's own sandbox (None: not sandboxed)."""
    import _socket  # the C half of `socket` (which would add enum, selectors... to every
    # task process); SCM_RIGHTS parsed by hand
    preload = ""
    try:
        __import__(module)
    except BaseException as exc:  # noqa: BLE001 - the task process imports it again and
        preload = _describe(exc)  # reports the error typed
    frames.write_frame(response_fd, {"op": "hello", "pid": os.getpid(), "template": module,
                                     "preload_error": preload, "signals": unguarded})
    sock = _socket.socket(fileno=sock_fd)
    space = _socket.CMSG_SPACE(4 * 4)
    while True:
        try:
            order, ancillary, _flags, _addr = sock.recvmsg(1 << 16, space)
        except OSError:
            os._exit(0)
        fds = []
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
                        for i in range(0, len(data) - len(data) % 4, 4)]
        if not order:  # the worker closed the socket: retire
            os._exit(0)
        order = marshal.loads(order)
        _import_learned(order.get("imports", ()))
        child = _fork_task_process(order, fds, response_fd, worker_pid, roots)
        if child is not None:  # in the task process: leave the template's loop
            sock.close()
            for fd in (response_fd, lifeline_fd):
                os.close(fd)
            return child


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:  # noqa: BLE001 - user code: its __str__ raised
        return f"{type(exc).__name__}: <str() raised>"


def _fork_task_process(order: dict, fds: list, response_fd: int, worker_pid: int,
                       roots: tuple | None):
    """Fork one task process (in the template: None after replying with its pid; in the
    task process: its (request fd, response fd))."""
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        frames.write_frame(response_fd, {"op": "forked", "pid": 0,
                                         "error": f"got {len(fds)} file descriptors, not 4"})
        return None
    report_r, report_w = os.pipe()
    try:
        middle = os.fork()
    except OSError as exc:
        middle, error = -1, f"fork: {exc}"
    if middle == 0:
        in_task_process = False
        me = os.getpid()
        try:
            child = os.fork()
            if child == 0:
                in_task_process = True
                os.close(report_r)
                os.close(report_w)
                return _become_task_process(order, fds, me, worker_pid, roots)
            os.write(report_w, child.to_bytes(4, "big"))
        finally:
            if not in_task_process:
                os._exit(0)
    for fd in (*fds, report_w):
        os.close(fd)
    pid = 0
    if middle > 0:
        got = frames.read_exact(report_r, 4)
        os.waitpid(middle, 0)  # once it is reaped, the task process is the worker's child
        pid = int.from_bytes(got, "big") if got else 0
        error = "" if pid else "the second fork failed"
    os.close(report_r)
    frames.write_frame(response_fd, {"op": "forked", "pid": pid, "error": error})
    return None


def _become_task_process(order: dict, fds: list, middle: int, worker_pid: int,
                         roots: tuple | None):
    request_fd, response_fd, lifeline_fd, log_fd = fds
    os.setsid()  # its own session: the worker's killpg reaches it and its children only
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for fd in (request_fd, response_fd, lifeline_fd):
        os.set_inheritable(fd, False)
    scratch = order["scratch"]
    os.chdir(scratch)
    os.environ["TMPDIR"] = scratch
    os.environ[frames.TOKEN_VAR] = order["token"]  # what it execs carries its own mark
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # computed again from TMPDIR, as in a fresh process
    if roots is not None:  # a second Landlock layer: of the template's scratch, only its own
        writable, readable = roots  # (the others' task directories are beneath it)
        unconfined = confine.sandbox((scratch, *writable), readable)
        if unconfined:
            sys.stderr.write(f"modelops runner: no own filesystem sandbox: {unconfined}\n")
    global _modules_at_fork
    _modules_at_fork = frozenset(sys.modules)
    _reseed_numpy_legacy_rng()
    _adopted(middle)
    confine.become_subreaper()  # daemons its task starts stay in its tree
    confine.set_parent_death_signal(worker_pid)
    confine.start_lifeline(lifeline_fd)
    return request_fd, response_fd


def imported_since_fork(bundle_dir: str) -> list:
    """Modules this task process imported while running (e.g. ``numpy.random``, which
    numpy imports on first use), for the template to import before its next forks: so a
    later task process starts with them, as it starts with the entrypoint's own imports.
    The bundle's own modules are left out: the model may import those lazily on purpose."""
    prefix = os.path.join(bundle_dir, "")
    names = []
    for name, module in list(sys.modules.items()):
        if name in _modules_at_fork or module is None:
            continue
        where = getattr(module, "__file__", None) or ""
        if not where.startswith(prefix):
            names.append(name)
    return sorted(names)[:frames.LEARNED_MAX]


def _import_learned(names) -> None:
    """In the template: import what task processes imported while running (errors are
    not the template's: a task process that needs the module imports it and reports)."""
    for name in names:
        if name in sys.modules or name in _import_failed:
            continue
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - e.g. an alias some module put in sys.modules
            _import_failed.add(name)


def _reseed_numpy_legacy_rng() -> None:
    """numpy's legacy global RNG (np.random.rand, ...) is seeded from the OS when
    numpy.random is imported: a task process forked from a template that imported it would
    otherwise start from the template's state, the same in every task process. Seeded
    from the OS again, it starts as in a fresh interpreter."""
    random = sys.modules.get("numpy.random")
    if random is not None:
        try:
            random.seed()
        except Exception:  # noqa: BLE001 - an unusual numpy: left as the template had it
            pass


def quick_exit() -> None:
    """End a forked task process: the atexit handlers a model registered run and output is
    flushed, but not the interpreter's teardown of every module the template imported
    (numpy's takes tens of ms of CPU per task, for nothing: the process is discarded)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - user code may have replaced/closed it
            pass
    os._exit(0)


def _adopted(middle: int) -> None:
    """Wait until the middle process has exited and the worker adopted us (bounded)."""
    import time

    deadline = time.monotonic() + REPARENT_WAIT
    while os.getppid() == middle:
        if time.monotonic() > deadline:
            sys.stderr.write("modelops runner: the forked task process was not adopted by "
                             "the worker\n")
            os._exit(1)
        time.sleep(0.0002)
