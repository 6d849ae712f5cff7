"""The program a warm process runs, with its venv's interpreter (``python -I -u runner``).

Stdlib only: the venv holds the bundle's dependencies, never modelops_runtime. Talks to
the pool over two dedicated pipes (fds passed at spawn), never stdout, so user prints
cannot corrupt a frame. A frame is a 9-byte header (codec byte, 8-byte big-endian length)
and a body: marshal (``M``) for small plain data (:func:`is_plain`: no import needed on
either side), pickle protocol 5 (``P``) for anything else. The pool imports the codec
from here, so both ends always agree.

Requests: ``{"op": "run", "entrypoint": "mod:fn", "args": (...)}`` and ``{"op": "ping"}``;
EOF on the request pipe ends the process.
Replies: ``{"op": "hello", ...}`` once at start, ``{"op": "pong"}``, and for runs
``{"ok": True, "result": ...}`` or ``{"ok": False, "kind", "type", "message",
"traceback", "missing"}`` with plain strings only (user exception classes may not
unpickle in the worker). ``kind`` is ``user`` (anything the model raised, SystemExit and
KeyboardInterrupt included), ``entrypoint``, ``bundle_module`` (a module of the bundle
itself is missing), ``missing_dependency`` (also for a request naming a class this venv
lacks), ``request`` (a request that cannot be decoded here), ``memory`` (MemoryError,
e.g. at the data cap) or ``result``. Nothing a model does to its outputs or exceptions
ends the process: only a crash, an exit from native code or a signal does.

Before any bundle code runs, the process confines itself with Landlock (:func:`_sandbox`):
it may write only in its scratch directory (its cwd, also its TMPDIR) and /dev, never in
the bundle cache or a venv, and it sets no_new_privs.

The process ends by itself when its parent goes away: EOF on the request pipe (idle),
EOF on a lifeline pipe watched by a thread (busy), and PR_SET_PDEATHSIG as a last line.
It is a session leader, so ending takes its own children with it.

Start-up time is part of every task when processes are not reused (MAX_PROCESS_REUSE=1),
so this module imports only what an interpreter has already loaded at start (os, sys,
_thread, _signal, marshal) plus faulthandler and ctypes (for PR_SET_PDEATHSIG). Each of
argparse, threading, signal, pickle, traceback costs 2-6 ms per start: options are parsed
by hand, pickle is imported only for a value marshal cannot carry, traceback only for an
error.
"""

import _thread
import faulthandler
import marshal
import os
import sys
from _signal import SIGKILL  # the C half of `signal`, already loaded; `signal` adds enum

MARSHAL = b"M"   # small plain data: no import needed on either side
PICKLE = b"P"    # anything else
HEADER_SIZE = 9  # codec byte + 8-byte big-endian body length
PLAIN = frozenset({str, int, float, bool, bytes, type(None)})  # + dict, list, tuple
PLAIN_ITEMS = 1000   # objects in a message beyond which pickle is used (bounds the walk)
PROTOCOL = 5
WRITABLE_ENV = "MODELOPS_WARM_WRITABLE_PATHS"  # extra writable dirs (comma-separated)
OPTIONS = ("--request-fd", "--response-fd", "--lifeline-fd", "--parent-pid", "--data-limit",
           "--bundle-dir", "--template")
NO_TEMPLATE = "-"  # --template value of a process that runs tasks itself
TOKEN_VAR = "_MODELOPS_WARM_PROCESS"  # marks a warm process's descendants (see orphans.py)
REPARENT_WAIT = 5.0  # s a forked task process waits to be adopted by the worker


def read_exact(fd: int, n: int) -> bytearray | None:
    """Read exactly ``n`` bytes; None on EOF (the parent closed the pipe or died)."""
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            return None
        pos += got
    return buf


def read_frame(fd: int):
    header = read_exact(fd, HEADER_SIZE)
    if header is None:
        return None
    body = read_exact(fd, int.from_bytes(header[1:], "big"))
    if body is None:
        return None
    return decode(header[:1], body)


def is_plain(obj, limit: int = PLAIN_ITEMS) -> bool:
    """True if ``obj`` is at most ``limit`` objects of exactly the PLAIN types. marshal
    must see nothing else: it would turn any buffer (a numpy array, a bytearray) into bytes
    and refuses subclasses only. Big payloads go to pickle: they pay its import anyway."""
    stack = [obj]
    while stack:
        limit -= 1
        if limit < 0:
            return False
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind not in PLAIN:
            return False
    return True


def encode(obj) -> tuple[bytes, bytes]:
    """(codec, body) of one message."""
    if is_plain(obj):
        return MARSHAL, marshal.dumps(obj)
    import _pickle  # pickle's C core: the `pickle` module also imports re, struct, ...

    return PICKLE, _pickle.dumps(obj, protocol=PROTOCOL)


def decode(codec: bytes, body):
    if codec == MARSHAL:
        return marshal.loads(body)
    if codec == PICKLE:
        import _pickle

        return _pickle.loads(body)
    raise ValueError(f"unknown frame codec {bytes(codec)!r}")


def header(codec: bytes, length: int) -> bytes:
    return codec + length.to_bytes(8, "big")


def send_body(fd: int, codec: bytes, body: bytes) -> None:
    _write_all(fd, memoryview(header(codec, len(body))))
    _write_all(fd, memoryview(body))


def write_frame(fd: int, obj) -> None:
    send_body(fd, *encode(obj))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _die_with_group() -> None:
    try:
        os.killpg(os.getpgrp(), SIGKILL)
    finally:
        os._exit(1)


def _set_parent_death_signal(parent_pid: int) -> None:
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
        _die_with_group()


# Landlock (Linux >= 5.13): what the sandbox takes away is every kind of write
_LL_WRITE_FILE, _LL_REMOVE = 1 << 1, (1 << 4) | (1 << 5)
_LL_MAKE = sum(1 << bit for bit in range(6, 13))     # char, dir, reg, sock, fifo, block, sym
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14             # ABI 2, ABI 3
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch


def _sandbox(writable: tuple[str, ...]) -> str:
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


def _cap_data(limit: int) -> None:
    """RLIMIT_DATA: the hard backstop of the memory limit. An allocation past it fails with
    MemoryError at once, however fast it came (the pool samples memory only every 100 ms).
    RLIMIT_DATA, not RLIMIT_AS: it leaves out shared libraries and reservations that are
    not writable (e.g. malloc arenas), so imports like numpy's are unaffected."""
    import resource  # C extension, ~0.1 ms; only with a memory limit

    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _watch_lifeline(fd: int) -> None:
    """The lifeline thread: block on the lifeline pipe; EOF means the worker process is
    gone (even if we missed it until now)."""
    try:
        while os.read(fd, 1):
            pass
    except BaseException:  # noqa: BLE001 - whatever went wrong, the watch must not vanish
        pass
    _die_with_group()


def _error(kind: str, exc: BaseException, **extra) -> dict:
    import traceback  # only on errors: it imports tokenize, linecache, re (~6 ms)

    tb = exc.__traceback__
    own = _error.__code__.co_filename  # runner.py, also when run from its compiled .pyc
    while tb is not None and tb.tb_frame.f_code.co_filename == own:
        tb = tb.tb_next  # show the user's frames, not the runner's
    return {
        "ok": False, "kind": kind,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": _text(exc),
        "traceback": _traceback(traceback, exc, tb),
        **extra,
    }


def _text(exc: BaseException) -> str:
    """``str(exc)``, also for an exception whose ``__str__`` itself raises."""
    try:
        return str(exc)
    except BaseException as inner:  # noqa: BLE001 - user code
        return (f"<str() of this {type(exc).__name__} raised "
                f"{type(inner).__name__}: {_text(inner) if inner is not exc else ''}>")


def _traceback(traceback, exc: BaseException, tb) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001 - e.g. __str__ raising again while formatting
        lines = traceback.format_tb(tb)
        return "".join(lines) + f"{type(exc).__qualname__}: {_text(exc)}\n"


def _missing(exc: ModuleNotFoundError, bundle_dir: str) -> dict:
    """A module that cannot be found: part of the bundle (its top-level package or module
    is in the bundle directory, so the bundle is incomplete) or a third-party dependency
    the venv lacks."""
    name = exc.name or ""
    top = name.partition(".")[0]
    if top and (os.path.isdir(os.path.join(bundle_dir, top))
                or os.path.isfile(os.path.join(bundle_dir, top + ".py"))):
        return _error("bundle_module", exc, missing=name)
    return _error("missing_dependency", exc, missing=name)


def _resolve(entrypoint: str, cache: dict, bundle_dir: str):
    """Import ``module:function``; classify failures so the worker raises the right error."""
    if entrypoint in cache:
        return cache[entrypoint], None
    module_name, _, attr = entrypoint.partition(":")
    try:
        __import__(module_name)  # absolute names only: what importlib.import_module does
        module = sys.modules[module_name]
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        own = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if exc.name in own:
            return None, _error("entrypoint", exc)
        return None, _missing(exc, bundle_dir)
    except BaseException as exc:  # noqa: BLE001 - user module raised (or sys.exit()) on import
        return None, _error("user", exc)
    func = getattr(module, attr, None)
    if not callable(func):
        exc = AttributeError(f"module {module_name!r} has no callable {attr!r}")
        return None, _error("entrypoint", exc)
    cache[entrypoint] = func
    return func, None


def _run(request: dict, cache: dict, bundle_dir: str) -> dict:
    func, error = _resolve(request["entrypoint"], cache, bundle_dir)
    if error is not None:
        return error
    try:
        result = func(*request["args"])
    except ModuleNotFoundError as exc:  # a lazy import the bundle or its venv lacks
        return _missing(exc, bundle_dir)
    except MemoryError as exc:  # over the data cap (or the machine is out of memory)
        return _error("memory", exc)
    except BaseException as exc:  # noqa: BLE001 - reported to the worker as SimulationError
        # SystemExit and KeyboardInterrupt too: a model calling sys.exit() fails its task
        # (as under executor=direct) and must not end this warm process
        return _error("user", exc)
    return {"ok": True, "result": result}


def _run_batch(request: dict, cache: dict, bundle_dir: str) -> dict:
    """Several runs of one entrypoint in one round trip (batched tiny sims): one reply per
    run, each with its own time; stops after a run out of memory (its heap is suspect)."""
    from time import perf_counter  # a builtin module: no file to load

    replies = []
    for args in request["args_list"]:
        started = perf_counter()
        reply = _run({"entrypoint": request["entrypoint"], "args": args}, cache, bundle_dir)
        reply["seconds"] = perf_counter() - started
        replies.append(reply)
        if reply.get("kind") == "memory":
            break
    return {"ok": True, "batch": replies}


def _encodable(reply: dict) -> dict:
    """A batch reply whose runs' outputs that cannot travel are replaced by their error."""
    replies = []
    for item in reply["batch"]:
        try:
            encode(item)
        except BaseException as exc:  # noqa: BLE001 - as for a single run
            item = {**_error("result", exc), "seconds": item.get("seconds", 0.0)}
        replies.append(item)
    return {"ok": True, "batch": replies}


def parse_options(argv: list[str]) -> tuple[int, int, int, int, int, str, str]:
    """The values of OPTIONS, each given once as ``--name value``, all but the last two a
    number (by hand: argparse costs ~6 ms per start)."""
    opts = dict(zip(argv[0::2], argv[1::2], strict=False))  # odd lengths: rejected below
    if (len(argv) != 2 * len(OPTIONS) or sorted(opts) != sorted(OPTIONS)
            or not all(opts[name].isdigit() for name in OPTIONS[:5])):
        usage = " ".join(f"{name} {'PATH' if name == '--bundle-dir' else 'MODULE|-' if name == '--template' else 'N'}"
                         for name in OPTIONS)
        sys.stderr.write(f"usage: runner {usage}\n(the warm pool starts this program; got: "
                         f"{' '.join(argv) or 'no arguments'})\n")
        raise SystemExit(2)
    return (*(int(opts[name]) for name in OPTIONS[:5]), opts["--bundle-dir"], opts["--template"])


def main(argv: list[str] | None = None) -> int:
    (request_fd, response_fd, lifeline_fd, parent_pid, data_limit, bundle_dir,
     template) = parse_options(sys.argv[1:] if argv is None else argv)

    for fd in (request_fd, response_fd, lifeline_fd):
        os.set_inheritable(fd, False)  # user subprocesses must not hold our pipes open
    _set_parent_death_signal(parent_pid)
    # writes only in the scratch directory (the cwd the pool gave us) and /dev; temporary
    # files go there too (removed with the process)
    scratch = os.getcwd()
    os.environ["TMPDIR"] = scratch
    extra = [p for p in os.environ.pop(WRITABLE_ENV, "").split(",") if p]
    unconfined = _sandbox((scratch, "/dev", *extra))
    if unconfined:
        sys.stderr.write(f"modelops runner: no filesystem sandbox: {unconfined}\n")
    if data_limit:
        _cap_data(data_limit)
    _thread.start_new_thread(_watch_lifeline, (lifeline_fd,))
    faulthandler.enable()  # a segfault's Python stack lands in the log tail
    sys.path.insert(0, bundle_dir)
    if template != NO_TEMPLATE:  # returns only in a forked task process, with its pipes
        request_fd, response_fd = _serve_forks(request_fd, response_fd, lifeline_fd,
                                               parent_pid, template,
                                               None if unconfined else ("/dev", *extra))

    write_frame(response_fd, {"op": "hello", "pid": os.getpid(),
                              "python": sys.version.split()[0], "prefix": sys.prefix,
                              "sandbox": unconfined or "landlock"})
    cache: dict = {}
    while True:
        try:
            request = read_frame(request_fd)
        except OSError:
            raise  # the pipe itself failed: nothing sensible is left to do
        except ModuleNotFoundError as exc:  # an argument of a class this venv lacks
            request, reply = {}, {**_missing(exc, bundle_dir), "in_request": True}
        except BaseException as exc:  # noqa: BLE001 - a frame that cannot be decoded here
            request, reply = {}, _error("request", exc)
        else:
            if request is None:
                if _forked:
                    _quick_exit()
                return 0
            if request.get("op") == "ping":
                reply = {"op": "pong"}
            elif request.get("op") == "batch":
                reply = _run_batch(request, cache, bundle_dir)
            else:
                reply = _run(request, cache, bundle_dir)
            if _forked and "op" not in reply:
                reply["imported"] = _imported_since_fork(bundle_dir)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - user code may have replaced/closed it
                pass
        try:
            try:
                codec, body = encode(reply)
            except BaseException:  # noqa: BLE001 - a batch: only the runs at fault fail
                if "batch" not in reply:
                    raise
                codec, body = encode(_encodable(reply))
        except BaseException as exc:  # noqa: BLE001 - outputs are not plain data (their
            codec, body = encode(_error("result", exc))  # __reduce__ may even raise SystemExit)
        del reply
        try:
            send_body(response_fd, codec, body)
        except BrokenPipeError:
            return 0
        del request, body  # do not hold a large payload while idle


# -- the template (MAX_PROCESS_REUSE=1 with FRESH_PROCESS_FROM=template) ----------------------
#
# A template has imported one entrypoint module of the bundle (and so its dependencies) and
# runs nothing else; for each task the worker sends it, over a socket, the four pipe ends of
# a new task process, and it forks one. The fork is doubled: the middle process exits at
# once, so the task process is adopted by the worker (a child subreaper, see orphans.py),
# which then waits for it, signals its group and reads its exit status like any process it
# spawned. The task process makes itself a session leader, moves onto its own pipes,
# scratch directory and mark, arms PR_SET_PDEATHSIG against the worker and starts its own
# lifeline thread, then runs the ordinary loop below. What fork does not renew is in the
# README ("fresh-process from a template").


def _serve_forks(sock_fd: int, response_fd: int, lifeline_fd: int, worker_pid: int,
                 module: str, writable: tuple[str, ...] | None) -> tuple[int, int]:
    """The template's loop: import ``module`` once, then fork a task process per order.
    Returns only in a task process (its request and response fds); the template itself
    exits when the worker closes the socket."""
    import _socket  # the C half of `socket` (which would add enum, selectors... to every
    # task process); SCM_RIGHTS parsed by hand
    preload = ""
    try:
        __import__(module)
    except BaseException as exc:  # noqa: BLE001 - the task process imports it again and
        preload = f"{type(exc).__name__}: {_text(exc)}"  # reports the error typed
    write_frame(response_fd, {"op": "hello", "pid": os.getpid(), "template": module,
                              "preload_error": preload})
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
        child = _fork_task_process(order, fds, response_fd, worker_pid, writable)
        if child is not None:  # in the task process: leave the template's loop
            sock.close()
            for fd in (response_fd, lifeline_fd):
                os.close(fd)
            return child


def _fork_task_process(order: dict, fds: list, response_fd: int, worker_pid: int,
                       writable: tuple[str, ...] | None):
    """Fork one task process (in the template: None after replying with its pid; in the
    task process: its (request fd, response fd))."""
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        write_frame(response_fd, {"op": "forked", "pid": 0,
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
                return _become_task_process(order, fds, me, worker_pid, writable)
            os.write(report_w, child.to_bytes(4, "big"))
        finally:
            if not in_task_process:
                os._exit(0)
    for fd in (*fds, report_w):
        os.close(fd)
    pid = 0
    if middle > 0:
        got = read_exact(report_r, 4)
        os.waitpid(middle, 0)  # once it is reaped, the task process is the worker's child
        pid = int.from_bytes(got, "big") if got else 0
        error = "" if pid else "the second fork failed"
    os.close(report_r)
    write_frame(response_fd, {"op": "forked", "pid": pid, "error": error})
    return None


def _become_task_process(order: dict, fds: list, middle: int, worker_pid: int,
                         writable: tuple[str, ...] | None):
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
    os.environ[TOKEN_VAR] = order["token"]  # what it execs carries its own mark
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # computed again from TMPDIR, as in a fresh process
    if writable is not None:  # a second Landlock layer: of the template's scratch, only its own
        unconfined = _sandbox((scratch, *writable))
        if unconfined:
            sys.stderr.write(f"modelops runner: no own filesystem sandbox: {unconfined}\n")
    global _forked, _modules_at_fork
    _forked = True
    _modules_at_fork = frozenset(sys.modules)
    _reseed_numpy_legacy_rng()
    _adopted(middle)
    _set_parent_death_signal(worker_pid)
    _thread.start_new_thread(_watch_lifeline, (lifeline_fd,))
    return request_fd, response_fd


_forked = False  # this process was forked from a template
_modules_at_fork: frozenset = frozenset()  # what the template had imported
_import_failed: set = set()  # learned names the template could not import (not retried)
LEARNED_MAX = 4000  # module names a template imports on behalf of its task processes


def _imported_since_fork(bundle_dir: str) -> list:
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
    return sorted(names)[:LEARNED_MAX]


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


def _quick_exit() -> None:
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


if __name__ == "__main__":
    sys.exit(main())
