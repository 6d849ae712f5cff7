"""The typed error for a failure a warm process's runner reported (its reply's ``kind``).

- Covers: entrypoint, bundle module, missing dependency, request, result, a refused
  write (the sandbox: into the bundle or venv cache, read-only by design, or elsewhere,
  allowed by writablePaths), and the model's own exception; the process stays warm.
- Does not: crashes, timeouts, memory limits (the pool's, see warm/failures.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ...errors import (BundleError, EntrypointError, MissingDependencyError, ModelOpsError,
                       SimulationError)
from ...models import Call


def user_error(reply: dict, call: Call, requirements: Sequence[str], log_tail: str,
               caches: Mapping[str, str] | None = None) -> ModelOpsError:
    """The typed error for a failure reported by the runner (the process stays warm).
    ``caches``: directory → what it is (the bundle and venv caches), never writable."""
    kind = reply.get("kind")
    remote = {"remote_type": reply.get("type", ""), "remote_message": reply.get("message", ""),
              "remote_traceback": reply.get("traceback", ""), "log_tail": log_tail}
    what = f"{reply.get('type')}: {reply.get('message')}"
    if kind == "entrypoint":
        return EntrypointError(
            f"entrypoint {call.entrypoint!r} cannot be loaded from bundle {call.bundle} "
            f"({what}). The entrypoint must be 'module:function' naming a module inside the "
            "bundle directory and a function in it; fix the name or repack the bundle.",
            entrypoint=call.entrypoint, **remote)
    if kind == "bundle_module":
        missing = reply.get("missing", "")
        return BundleError(
            f"{call.entrypoint}: bundle code imports {missing!r}, a module of the bundle "
            f"itself ({missing.partition('.')[0]!r} is in the bundle directory) that the "
            f"bundle does not contain. Add {_module_file(missing)} to the bundle (or fix the "
            "import) and repack.",
            missing=missing, entrypoint=call.entrypoint, bundle=call.bundle, **remote)
    if kind == "missing_dependency" and reply.get("in_request"):
        missing = reply.get("missing", "")
        return MissingDependencyError(
            f"{call.entrypoint}: the task's arguments hold an object of module {missing!r}, "
            f"which the bundle's environment does not have ({what}). Pass plain data (dicts, "
            "lists, numbers, strings), or add the package that provides it to the bundle's "
            "requirements.", missing=missing, requirements=list(requirements),
            **remote)
    if kind == "missing_dependency":
        deps = ", ".join(requirements) or "none"
        missing = reply.get("missing", "")
        return MissingDependencyError(
            f"{call.entrypoint}: bundle code imports {missing!r}, which its "
            f"environment does not have (declared dependencies: {deps}). Add the package "
            "that provides it to the bundle's requirements.txt or pyproject.toml and repack "
            f"(if {missing!r} is your own code, add {_module_file(missing)} to the bundle "
            "directory).",
            missing=missing, requirements=list(requirements), **remote)
    if kind == "request":
        return SimulationError(
            f"{call.entrypoint}: the task's arguments cannot be read in the bundle's "
            f"environment ({what}). Pass plain data (dicts, lists, numbers, strings) or "
            "objects of packages the bundle declares.", **remote)
    if kind in ("result", "unreadable"):
        return SimulationError(
            f"{call.entrypoint} returned outputs that cannot travel back to the worker "
            f"({what}). Return plain data: dicts, lists, numbers, strings, bytes.", **remote)
    cache = _cache_of(reply.get("refused"), caches)
    if cache:
        return SimulationError(
            f"{call.entrypoint} failed: writing {reply['refused']} was refused ({what}): it is "
            f"in {cache}, read-only by design (bundles and venvs never change once "
            "published; writablePaths cannot allow it). Write in the task's working directory "
            f"(also TMPDIR and HOME) instead.\n\nRemote traceback:\n{reply.get('traceback', '')}",
            **remote)
    if reply.get("refused"):
        return SimulationError(
            f"{call.entrypoint} failed: writing {reply['refused']} was refused ({what}). Tasks "
            "write only in their working directory (also TMPDIR and HOME) and the runtime's "
            "caches; to allow that directory, add it to worker.executor.writablePaths "
            f"(MODELOPS_WARM_WRITABLE_PATHS).\n\nRemote traceback:\n{reply.get('traceback', '')}",
            **remote)
    return SimulationError(
        f"{call.entrypoint} raised {what}{_exit_hint(reply.get('type', ''))}\n\n"
        f"Remote traceback:\n{reply.get('traceback', '')}", **remote)


def _cache_of(path: str | None, caches: Mapping[str, str] | None) -> str | None:
    """``what (directory)`` of the cache ``path`` is in, or None."""
    if not path or not caches:
        return None
    here = os.path.realpath(path)
    for root, what in caches.items():
        real = os.path.realpath(root)
        if here == real or here.startswith(real.rstrip("/") + "/"):
            return f"{what} ({root})"
    return None


def _module_file(name: str) -> str:
    """Where module ``name`` lives relative to the bundle root (``a.b`` → ``a/b.py``)."""
    return name.replace(".", "/") + ".py"


def _exit_hint(remote_type: str) -> str:
    if remote_type in ("SystemExit", "KeyboardInterrupt"):
        return (" (the task failed and its warm process stays up; a model must return its "
                "outputs instead of exiting)")
    return ""
