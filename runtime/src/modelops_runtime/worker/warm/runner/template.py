"""The template's half of the runner program (MAX_PROCESS_REUSE=1 with
FRESH_PROCESS_FROM=template); runner.py loads it only in a template. Stdlib only.

A template imports none of the bundle's modules: each task process imports them itself,
so their import-time code runs once per task, as in a new interpreter. It imports only
what task processes imported from outside the bundle and prewarm.py found clean (no
thread, file, handler, RNG or module global a fork would not reproduce). For each task the
worker sends it, over a socket, the four pipe ends of a new task process, and it forks
one whose parent is the worker (clone.py: CLONE_PARENT), which then waits for it, signals
its group and reads its exit status like any process it spawned. Where clone.py cannot,
the fork is doubled: the middle process exits at once, so the task process is adopted by
the worker (a child subreaper, see orphans.py). The task process makes
itself a session leader, moves onto its own pipes, scratch directory and mark, reseeds
numpy's legacy RNG (Python's `random` reseeds itself at fork), arms PR_SET_PDEATHSIG
against the worker and has its own lifeline (the kernel's, which the worker arms on its
pipe, as for an exec'd process), then runs the runner's ordinary loop. What fork does not renew is in docs/modes.md ("fresh-process from a template").
"""

import marshal
import os
import sys

# The runner's siblings this module uses: a program started with -I cannot import them,
# so runner.py's loader sets these once this file has run (see runner.py ``_load``).
frames = confine = prewarm = None
clone = None  # clone.CloneParent of this template (forks with the worker as the parent)

REPARENT_WAIT = 5.0  # s a forked task process waits to be adopted by the worker

# why the template runs without the signal guard ('': it has one). A task process keeps
# the template's filter (a process can have only one listener): the worker answers its
# calls as its own, by its place in the process tree (guard.py)
unguarded = ""

_modules_at_fork: frozenset = frozenset()  # what the template had imported
_at_fork: tuple = ()  # _import_context() when the task process started


def serve_forks(sock_fd: int, response_fd: int, lifeline_fd: int, worker_pid: int,
                module: str, roots: tuple | None,
                places: tuple = ("TMPDIR",)) -> tuple[int, int]:
    """The template's loop: fork a task process per order (after importing, checked, what
    task processes learned). Returns only in a task process (its request and response
    fds); the template itself exits when the worker closes the socket, or after telling
    the worker that its own state moved while importing (``tainted``). ``roots``:
    (writable, readable) beside its scratch directory, for each task process's own
    sandbox (None: not sandboxed). ``places``: the variables the template pointed at its
    scratch directory (confine.own_places), pointed at each task's own."""
    import _socket  # the C half of `socket` (which would add enum, selectors... to every
    # task process); SCM_RIGHTS parsed by hand
    frames.write_frame(response_fd, {"op": "hello", "pid": os.getpid(), "template": module,
                                     "signals": unguarded})
    sock = _socket.socket(fileno=sock_fd)
    space = _socket.CMSG_SPACE(4 * 4)
    # the task processes' own sandbox, all but their scratch: opened once (confine.py)
    prepared = confine.prepare_sandbox(*roots) if roots is not None else None
    baseline = _own_state(())
    global _modules_at_fork
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
        excluded, plan = {}, None
        if order.get("plan") or order.get("imports"):
            if order.get("plan"):  # an earlier template's decisions (worker/warm/plans.py)
                excluded.update(prewarm.adopt(order["plan"]))
            prewarm.learn(order.get("imports") or ())
            excluded.update(prewarm.prewarm())
            moved = _moved(baseline, _own_state(fds))
            if moved:  # what the probes did not see happened here: never fork from it
                frames.write_frame(response_fd, {"op": "forked", "pid": 0,
                                                 "tainted": moved, "excluded": excluded})
                os._exit(0)
            plan = list(prewarm.prewarmed)  # for the worker to keep (with the exclusions)
        if plan is not None or len(sys.modules) != len(_modules_at_fork):
            _modules_at_fork = frozenset(sys.modules)  # what its task processes start with
        # the task process's own Landlock layer, made here (where its code is warm) for
        # the task process to apply: its scratch and the prepared roots
        rules = (None if prepared is None or "scratch" not in order
                 else confine.ruleset((order["scratch"],), (), prepared))
        child = _fork_task_process(order, fds, response_fd, worker_pid,
                                   None if roots is None else (roots, prepared, rules),
                                   excluded, places, plan)
        if child is not None:  # in the task process: leave the template's loop
            sock.close()
            for fd in (response_fd, lifeline_fd):
                os.close(fd)
            return child
        if rules is not None:
            confine.discard(rules)


def _own_state(order_fds) -> dict:
    """What the template's imports must leave as it was (checked after each import)."""
    import atexit

    fds = prewarm.open_fds() - {str(fd) for fd in order_fds}
    return {"threads started": len(os.listdir("/proc/self/task")),
            "files or sockets opened": sorted(fds),
            "atexit handlers registered": atexit._ncallbacks()}


def _moved(before: dict, after: dict) -> str:
    for what, value in before.items():
        if after[what] != value:
            extra = ""
            if isinstance(value, list):
                new = sorted(set(after[what]) - set(value))
                extra = f": {', '.join(_describe_fd(fd) for fd in new[:3])}"
            return f"the template's own imports left it with {what}{extra}"
    return ""


def _describe_fd(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fd


def _fork_task_process(order: dict, fds: list, response_fd: int, worker_pid: int,
                       roots: tuple | None, excluded: dict, places: tuple,
                       plan: list | None = None):
    """Fork one task process (``roots``: its sandbox's and what the template prepared of
    it; in the template: None after replying with its pid and, if
    this order made it import anything, ``prewarmed``: every name it has imported for its
    task processes, in order; in the task process: its (request fd, response fd))."""
    extra = {} if plan is None else {"prewarmed": plan}
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        frames.write_frame(response_fd, {"op": "forked", "pid": 0, "excluded": excluded,
                                         "error": f"got {len(fds)} file descriptors, not 4",
                                         **extra})
        return None
    if clone is not None and clone.usable():
        try:
            pid = clone.fork()
        except OSError as exc:  # refused (e.g. a sandbox): the double fork from now on
            clone.why_not = str(exc)
        else:
            if pid == 0:
                return _become_task_process(order, fds, 0, worker_pid, roots, places)
            for fd in fds:
                os.close(fd)
            frames.write_frame(response_fd, {"op": "forked", "pid": pid, "error": "",
                                             "excluded": excluded, **extra})
            return None
    if clone is not None:  # why the double fork (said once in the worker's log)
        extra["double"] = clone.why_not
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
                return _become_task_process(order, fds, me, worker_pid, roots, places)
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
    frames.write_frame(response_fd, {"op": "forked", "pid": pid, "error": error,
                                     "excluded": excluded, **extra})
    return None


def _become_task_process(order: dict, fds: list, middle: int, worker_pid: int,
                         roots: tuple | None, places: tuple):
    request_fd, response_fd, lifeline_fd, log_fd = fds
    os.setsid()  # its own session: the worker's killpg reaches it and its children only
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for fd in (request_fd, response_fd, lifeline_fd):
        os.set_inheritable(fd, False)
    scratch = order["scratch"]
    os.chdir(scratch)
    confine.own_places(scratch, places)  # HOME, TMPDIR, caches: its own, not the template's
    _forget_places()
    os.environ[frames.TOKEN_VAR] = order["token"]  # what it execs carries its own mark
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # computed again from TMPDIR, as in a fresh process
    if roots is not None:  # a second Landlock layer: of the template's scratch, only its own
        (writable, readable), prepared, rules = roots  # (the others' task directories are
        if prepared is not None:  # beneath it); made by the template, with its scratch
            unconfined = confine.enforce(rules)
            confine.release(prepared)
        else:
            unconfined = confine.sandbox((scratch, *writable), readable)
        if unconfined:
            sys.stderr.write(f"modelops runner: no own filesystem sandbox: {unconfined}\n")
    if "--template" in sys.argv[:-1]:  # as a task process's own interpreter has it
        sys.argv[sys.argv.index("--template") + 1] = frames.NO_TEMPLATE
    global _at_fork
    _reseed_numpy_legacy_rng()
    _at_fork = _import_context()
    if middle:  # double-forked: wait until the worker adopted us
        _adopted(middle)
    confine.become_subreaper()  # daemons its task starts stay in its tree
    confine.set_parent_death_signal(worker_pid)
    confine.start_lifeline(lifeline_fd, thread=False)  # none if the kernel watches it
    return request_fd, response_fd


def _forget_places() -> None:
    """Places a module of the template computed once from the template's environment,
    computed again from the task process's own (as in a fresh interpreter): matplotlib's
    config and cache directories."""
    mpl = sys.modules.get("matplotlib")
    for name in ("get_configdir", "get_cachedir"):
        clear = getattr(getattr(mpl, name, None), "cache_clear", None)
        if clear is not None:
            try:
                clear()
            except Exception:  # noqa: BLE001 - an unusual matplotlib: left as it was
                pass


def imported_since_fork(bundle_dir: str) -> list:
    """Modules this task process imported from outside the bundle while running, in the
    order it imported them (e.g. ``numpy``, ``numpy.random``), for the template to import
    (once prewarm.py found them clean) before its next forks. The bundle's own modules are
    never the template's: each task process imports them itself. A hint only: the names
    after the last of the template's modules in sys.modules (a new name lands at its end),
    so a task that removed one of those may hide some of its own (never a wrong one)."""
    new = []
    try:
        for name in reversed(sys.modules):  # touches only what came after the fork (the
            if name in _modules_at_fork:  # template's many names stay unwritten, unfaulted)
                break
            new.append(name)
    except RuntimeError:  # a thread of the task imported meanwhile: what was seen
        pass
    prefix = os.path.join(bundle_dir, "")
    names = []
    for name in reversed(new):
        module = sys.modules.get(name)
        if module is None:
            continue
        where = getattr(module, "__file__", None) or ""
        if not where.startswith(prefix) and name not in prewarm.excluded:
            names.append(name)
    return names[:frames.LEARNED_MAX]


def _import_context() -> tuple:
    """What an import may read that bundle code can change first: the environment, the
    working directory, sys.path and the import hooks (copied in C: ``dict(os.environ)``
    decodes every variable in Python)."""
    return (os.environ._data.copy(), os.getcwd(), list(sys.path),
            [id(h) for h in (*sys.meta_path, *sys.path_hooks)])


def doubt() -> str:
    """Why this task may have observed something a new interpreter would not ('' if
    nothing): its code changed what an import reads (the environment, cwd, sys.path or the
    import hooks) while modules the template imported were in place: in a new interpreter
    those imports would have run after the change and may have read it."""
    if not prewarm.prewarmed:
        return ""
    try:
        now = _import_context()
    except Exception as exc:  # noqa: BLE001 - e.g. a cwd that was removed
        return f"its state cannot be read ({type(exc).__name__})"
    for what, before, after in zip(("the environment", "the working directory", "sys.path",
                                    "the import hooks"), _at_fork, now):
        if before != after:
            return (f"bundle code changed {what} while modules the template had imported "
                    f"({', '.join(prewarm.prewarmed[:3])}...) were in place")
    return ""


def _reseed_numpy_legacy_rng() -> None:
    """numpy's legacy global RNG (np.random.rand, ...) is seeded from the OS when
    numpy.random is imported: a task process forked from a template that imported it would
    otherwise start from the template's state, the same in every task process. Its bit
    generator is initialised again in place, as the import makes it (a new SeedSequence
    from the OS, so ``spawn`` works and differs per process, and a new lock shared with
    the RandomState), so it starts as in a fresh interpreter."""
    random = sys.modules.get("numpy.random")
    if random is None:
        return
    try:
        legacy = random.mtrand._rand
        bits = legacy._bit_generator
        bits.__init__()  # MT19937(): what numpy.random's import makes
        legacy.__init__(bits)  # RandomState(bits): its lock, no cached gauss
    except Exception:  # noqa: BLE001 - an older or unusual numpy: seeded from the OS
        try:
            random.seed()
        except Exception:  # noqa: BLE001 - left as the template had it
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
