"""The program a warm process runs, with its venv's interpreter (``python -I -u main``).

- covers: options, the request loop, running entrypoints, error replies; stdlib only (the
  venv holds the bundle's dependencies, never modelops_runtime).
- does not: import its siblings (frames, confine, template, prewarm): ``_load`` runs each into a
  module object of its own, so bundle modules of the same names stay the bundle's.
- see also: docs/design.md "The runner program" (requests, replies, how it ends, start cost).
"""

import faulthandler
import marshal
import os
import sys

OPTIONS = ("--request-fd", "--response-fd", "--lifeline-fd", "--parent-pid", "--data-limit",
           "--guard-fd", "--bundle-dir", "--template")
_HERE = os.path.dirname(__file__)
_COMPILED = __file__.endswith(".pyc")  # started from the directory program.py compiled


def _load(name: str, **siblings):
    """The sibling file ``name`` of this program as a module object: a ``.pyc`` that
    program.py compiled and checked (its code follows a 16-byte header) or the ``.py``
    source. Never put into sys.modules: a plain name there (``frames``) would shadow a
    user's module of that name, and user code runs in this interpreter. ``siblings`` are
    set as its globals once it has run (modules it uses but cannot import)."""
    path = os.path.join(_HERE, name + (".pyc" if _COMPILED else ".py"))
    with open(path, "rb") as file:
        data = file.read()
    if _COMPILED:
        code = marshal.loads(memoryview(data)[16:])
    else:
        code = compile(data, path, "exec", dont_inherit=True)
    module = type(sys)(f"modelops_runner.{name}")
    module.__file__ = path
    exec(code, module.__dict__)
    module.__dict__.update(siblings)
    _OWN_FILES.add(code.co_filename)
    return module


_OWN_FILES = {_load.__code__.co_filename}  # the program's code: left out of a traceback
_SCRATCH = [""]  # this process's scratch directory (set in main)
frames = _load("frames")
confine = _load("confine", frames=frames)


def _error(kind: str, exc: BaseException, **extra) -> dict:
    import traceback  # only on errors: it imports tokenize, linecache, re (~6 ms)

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next  # show the user's frames, not the runner's (also when compiled)
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
        refused = confine.refused_write(exc, _SCRATCH[0])
        return _error("user", exc, **({"refused": refused} if refused else {}))
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
            frames.encode(item)
        except BaseException as exc:  # noqa: BLE001 - as for a single run
            item = {**_error("result", exc), "seconds": item.get("seconds", 0.0)}
        replies.append(item)
    return {"ok": True, "batch": replies}


def _reap_children() -> None:
    """Wait for every child that has exited: the processes the last task started, which
    the worker killed after it (this process is their subreaper, so orphans count)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def parse_options(argv: list[str]) -> tuple[int, int, int, int, int, int, str, str]:
    """The values of OPTIONS, each given once as ``--name value``, all but the last two a
    number (by hand: argparse costs ~6 ms per start)."""
    opts = dict(zip(argv[0::2], argv[1::2], strict=False))  # odd lengths: rejected below
    if (len(argv) != 2 * len(OPTIONS) or sorted(opts) != sorted(OPTIONS)
            or not all(opts[name].isdigit() for name in OPTIONS[:6])):
        usage = " ".join(f"{name} {'PATH' if name == '--bundle-dir' else 'MODULE|-' if name == '--template' else 'N'}"
                         for name in OPTIONS)
        sys.stderr.write(f"usage: runner {usage}\n(the warm pool starts this program; got: "
                         f"{' '.join(argv) or 'no arguments'})\n")
        raise SystemExit(2)
    return (*(int(opts[name]) for name in OPTIONS[:6]), opts["--bundle-dir"],
            opts["--template"])


def main(argv: list[str] | None = None) -> int:
    (request_fd, response_fd, lifeline_fd, parent_pid, data_limit, guard_fd, bundle_dir,
     template) = parse_options(sys.argv[1:] if argv is None else argv)

    for fd in (request_fd, response_fd, lifeline_fd):
        os.set_inheritable(fd, False)  # user subprocesses must not hold our pipes open
    confine.set_parent_death_signal(parent_pid)
    # writes only in the scratch directory (the cwd the pool gave us), /dev and the paths
    # the worker allows (the venv's compile cache, writablePaths); temporary files, HOME and
    # the caches of scientific packages go to the scratch directory too (removed with it)
    scratch = _SCRATCH[0] = os.getcwd()
    places = confine.own_places(scratch)
    extra = [p for p in os.environ.pop(frames.WRITABLE_ENV, "").split(",") if p]
    bytecode = os.environ.pop(frames.BYTECODE_ENV, "")  # read-only, beside the bundle
    readable = confine.readable_roots(bundle_dir, _HERE) + ((bytecode,) if bytecode else ())
    unconfined = confine.sandbox((scratch, "/dev", *extra), readable)
    if unconfined:
        sys.stderr.write(f"modelops runner: no filesystem sandbox: {unconfined}\n")
    if data_limit:
        confine.cap_data(data_limit)
    # signals to other processes and new processes are the worker's to allow; a template
    # is no subreaper (the task processes it forks must be adopted by the worker)
    unguarded = confine.guard_signals(guard_fd, subreaper=template == frames.NO_TEMPLATE,
                                      template=template != frames.NO_TEMPLATE)
    # a template's own is a thread (clone.py checks it); others' the kernel's, if armed
    lifeline = confine.start_lifeline(lifeline_fd, thread=template != frames.NO_TEMPLATE)
    faulthandler.enable()  # a segfault's Python stack lands in the log tail
    sys.path.insert(0, bundle_dir)
    if bytecode:  # the bundle's modules compiled once per pod, not in every process
        _load("pycache").install(bundle_dir, bytecode)
    forked = None  # in a task process forked from a template: template.py
    if template != frames.NO_TEMPLATE:  # returns only in a forked task process, with its pipes
        forked = _load("template", frames=frames, confine=confine,
                       prewarm=_load("prewarm", frames=frames),
                       clone=_load("clone").CloneParent(lifeline, lifeline_fd))
        forked.unguarded = unguarded  # the template's; a task process sets its own
        request_fd, response_fd = forked.serve_forks(
            request_fd, response_fd, lifeline_fd, parent_pid, template,
            None if unconfined else (("/dev", *extra), readable), places)
        unguarded = forked.unguarded
        _SCRATCH[0] = os.getcwd()  # a forked task process's own

    frames.write_frame(response_fd, {"op": "hello", "pid": os.getpid(),
                                     "python": sys.version.split()[0], "prefix": sys.prefix,
                                     "sandbox": unconfined or "landlock",
                                     "signals": unguarded})
    cache: dict = {}
    while True:
        try:
            request = frames.read_frame(request_fd)
        except OSError:
            raise  # the pipe itself failed: nothing sensible is left to do
        except ModuleNotFoundError as exc:  # an argument of a class this venv lacks
            request, reply = {}, {**_missing(exc, bundle_dir), "in_request": True}
        except BaseException as exc:  # noqa: BLE001 - a frame that cannot be decoded here
            request, reply = {}, _error("request", exc)
        else:
            if request is None:
                _reap_children()  # not left to the worker as zombies it cannot tell apart
                if forked is not None:
                    forked.quick_exit()
                return 0
            _reap_children()  # what the last task started: the worker killed it
            if request.get("op") == "ping":
                reply = {"op": "pong"}
            elif request.get("op") == "batch":
                reply = _run_batch(request, cache, bundle_dir)
            else:
                reply = _run(request, cache, bundle_dir)
            if forked is not None and "op" not in reply:
                reply["imported"] = forked.imported_since_fork(bundle_dir)
                reply["doubt"] = forked.doubt()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - user code may have replaced/closed it
                pass
        try:
            try:
                codec, body = frames.encode(reply)
            except BaseException:  # noqa: BLE001 - a batch: only the runs at fault fail
                if "batch" not in reply:
                    raise
                codec, body = frames.encode(_encodable(reply))
        except BaseException as exc:  # noqa: BLE001 - outputs are not plain data (their
            # __reduce__ may even raise SystemExit)
            codec, body = frames.encode(_error("result", exc))
        del reply
        try:
            frames.send_body(response_fd, codec, body)
        except BrokenPipeError:
            return 0
        del request, body  # do not hold a large payload while idle


if __name__ == "__main__":
    sys.exit(main())
