"""The program a warm process runs, with its venv's interpreter (``python -I -u runner.py``).

Stdlib only: the venv holds the bundle's dependencies, never modelops_runtime. Talks to
the pool over two dedicated pipes (fds passed at spawn), never stdout, so user prints
cannot corrupt a frame. A frame is an 8-byte big-endian length + a pickle (protocol 5).

Requests: ``{"op": "run", "entrypoint": "mod:fn", "args": (...)}`` and ``{"op": "ping"}``.
Replies: ``{"op": "hello", ...}`` once at start, ``{"op": "pong"}``, and for runs
``{"ok": True, "result": ...}`` or ``{"ok": False, "kind", "type", "message",
"traceback", "missing"}`` with plain strings only (user exception classes may not
unpickle in the worker).

The process ends by itself when its parent goes away: EOF on the request pipe (idle),
EOF on a lifeline pipe watched by a thread (busy), and PR_SET_PDEATHSIG as a last line.
It is a session leader, so ending takes its own children with it.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import os
import pickle
import signal
import struct
import sys
import threading
import traceback

HEADER = struct.Struct(">Q")
PROTOCOL = 5


def read_exact(fd: int, n: int) -> bytearray | None:
    """Read exactly ``n`` bytes; None on EOF (the parent closed the pipe or died)."""
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        try:
            got = os.readv(fd, [view[pos:]])
        except InterruptedError:  # pragma: no cover - PEP 475 retries already
            continue
        if got == 0:
            return None
        pos += got
    return buf


def read_frame(fd: int):
    header = read_exact(fd, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    body = read_exact(fd, length)
    if body is None:
        return None
    return pickle.loads(body)


def write_frame(fd: int, obj) -> None:
    send_body(fd, pickle.dumps(obj, protocol=PROTOCOL))


def send_body(fd: int, body: bytes) -> None:
    _write_all(fd, memoryview(HEADER.pack(len(body))))
    _write_all(fd, memoryview(body))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _die_with_group() -> None:
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(1)


def _watch_lifeline(fd: int) -> None:
    """Block on the lifeline pipe; EOF means the worker process is gone."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    _die_with_group()


def _set_parent_death_signal(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort: the lifeline pipe is the main watch
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _die_with_group()


def _error(kind: str, exc: BaseException, **extra) -> dict:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # show the user's frames, not the runner's
    return {
        "ok": False, "kind": kind,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
        **extra,
    }


def _resolve(entrypoint: str, cache: dict):
    """Import ``module:function``; classify failures so the worker raises the right error."""
    if entrypoint in cache:
        return cache[entrypoint], None
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        own = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if exc.name in own:
            return None, _error("entrypoint", exc)
        return None, _error("missing_dependency", exc, missing=exc.name or "")
    except Exception as exc:  # noqa: BLE001 - user module raised while importing
        return None, _error("user", exc)
    func = getattr(module, attr, None)
    if not callable(func):
        exc = AttributeError(f"module {module_name!r} has no callable {attr!r}")
        return None, _error("entrypoint", exc)
    cache[entrypoint] = func
    return func, None


def _run(request: dict, cache: dict) -> dict:
    func, error = _resolve(request["entrypoint"], cache)
    if error is not None:
        return error
    try:
        result = func(*request["args"])
    except ModuleNotFoundError as exc:  # a lazy import of a dependency the venv lacks
        return _error("missing_dependency", exc, missing=exc.name or "")
    except Exception as exc:  # noqa: BLE001 - reported to the worker as SimulationError
        return _error("user", exc)
    return {"ok": True, "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--response-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--bundle-dir", required=True)
    args = parser.parse_args(argv)

    for fd in (args.request_fd, args.response_fd, args.lifeline_fd):
        os.set_inheritable(fd, False)  # user subprocesses must not hold our pipes open
    _set_parent_death_signal(args.parent_pid)
    threading.Thread(target=_watch_lifeline, args=(args.lifeline_fd,), daemon=True,
                     name="modelops-lifeline").start()
    faulthandler.enable()  # a segfault's Python stack lands in the log tail
    sys.path.insert(0, args.bundle_dir)

    write_frame(args.response_fd, {"op": "hello", "pid": os.getpid(),
                                   "python": sys.version.split()[0], "prefix": sys.prefix})
    cache: dict = {}
    while True:
        request = read_frame(args.request_fd)
        if request is None or request.get("op") == "exit":
            return 0
        if request.get("op") == "ping":
            reply = {"op": "pong"}
        else:
            reply = _run(request, cache)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - user code may have replaced/closed it
                pass
        try:
            body = pickle.dumps(reply, protocol=PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - outputs are not plain data
            body = pickle.dumps(_error("result", exc), protocol=PROTOCOL)
        del reply
        try:
            send_body(args.response_fd, body)
        except BrokenPipeError:
            return 0
        del request, body  # do not hold a large payload while idle


if __name__ == "__main__":
    sys.exit(main())
