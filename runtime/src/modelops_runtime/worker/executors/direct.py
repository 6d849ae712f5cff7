"""DirectExecEnv: run bundle code inside the Dask worker process (debug mode).

Python's import system is process-global: ``sys.path`` and ``sys.modules`` are shared by
all threads, so two threads importing same-named bundle modules at once would share module
state. Calls are therefore serialised per worker process by one lock, whatever
``--nthreads`` is: direct is a debugging mode and trades speed for correctness. Around
every call the bundle directory is put on ``sys.path`` and, afterwards, every module
imported from the bundle is dropped from ``sys.modules`` so the next call starts from
fresh module state. State outside the bundle (third-party modules, threads, environment,
working directory) is *not* reset.

The working directory is the Dask worker's own, shared by every task of the worker and
never the bundle directory: model code writing relative paths writes there, and later tasks
see those files. It is not changed per task because it is process-global (Dask's own
threads keep running meanwhile); isolated_warm gives every warm process its own scratch
directory instead.

The unpacked bundle is read-only by mode, and bundle code here has the worker's own rights
(it can ``chmod``): before every call its stat snapshot is compared with the one taken when
this process verified it, and a changed bundle is checked against its manifest and unpacked
again (bundles/store.py), so every task runs the published files. Python writes no
``__pycache__`` into it (as under a pod's uid, also when the worker runs as root).

A model calling ``sys.exit()`` or raising ``KeyboardInterrupt`` fails its task with a
SimulationError, as under isolated_warm; the worker goes on.

Caches that scientific packages write at run time (numba's ``NUMBA_CACHE_DIR``,
matplotlib's ``MPLCONFIGDIR``, ``XDG_CACHE_HOME``) go to a directory of this worker process
under its TMPDIR (the image's site-packages and HOME may be read-only), unless the
worker's environment sets them; shared by its tasks, as everything else here, and removed
at shutdown.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import ClassVar

from ...bundles import read_dependencies
from ...errors import (BundleError, EntrypointError, MissingDependencyError, ModelOpsError,
                      SimulationError)
from ...models import Call, SimResult, check_entrypoint
from ..warm.scratch import CACHES_PREFIX
from ..warm.venvs.keys import owner_tag
from .base import ExecEnv

# one per process: the import system it protects is one per process
_PROCESS_LOCK = threading.Lock()
CACHE_VARIABLES = {"NUMBA_CACHE_DIR": "numba", "MPLCONFIGDIR": "matplotlib",
                   "XDG_CACHE_HOME": "cache"}


def _is_under(path: str | None, root: str) -> bool:
    # bundle modules are imported through ``root`` itself, so their paths start with it
    return isinstance(path, str) and path.startswith(root + os.sep)


def _bundle_modules(root: str) -> list[str]:
    """Names of loaded modules whose code comes from ``root``."""
    names = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
        search = list(getattr(spec, "submodule_search_locations", None) or [])
        if _is_under(origin, root) or any(_is_under(p, root) for p in search):
            names.append(name)
    return names


class DirectExecEnv(ExecEnv):
    """Runs calls in this process, one at a time, with bundle module state reset per call."""

    name: ClassVar[str] = "direct"

    def __init__(self, config, bundles) -> None:
        super().__init__(config, bundles)
        self._tasks = 0
        self._packages: tuple[str, list[str]] | None = None   # (digest, list), once
        self._caches: Path | None = None  # the run-time caches' directory (module docstring)
        self._set: list[str] = []  # the variables of CACHE_VARIABLES set here

    def _own_caches(self) -> None:
        unset = [name for name in CACHE_VARIABLES if name not in os.environ]
        if self._caches is not None or not unset:
            return
        self._caches = Path(tempfile.mkdtemp(prefix=f"{CACHES_PREFIX}{owner_tag()}-"))
        for name in unset:
            os.environ[name] = str(self._caches / CACHE_VARIABLES[name])
        self._set = unset

    def run(self, call: Call) -> SimResult:
        try:
            check_entrypoint(call.entrypoint)
        except ValueError as exc:
            raise EntrypointError(str(exc), entrypoint=call.entrypoint) from None
        # not collected while it runs; checked again if a task changed it (module docstring)
        bundle_dir, lease = self.bundles.lease(call.bundle, recheck=True)
        try:
            with _PROCESS_LOCK:
                self._own_caches()
                env_digest = self._package_set()[0]
                self._tasks += 1
                count = self._tasks
                start = time.perf_counter()
                outputs = self._run_locked(call, bundle_dir)
                duration = time.perf_counter() - start
        finally:
            os.close(lease)
        return SimResult(outputs=outputs, executor=self.name, pid=os.getpid(),
                         process_task_count=count, venv_cache_hit=None, duration_s=duration,
                         env_digest=env_digest)

    def _package_set(self) -> tuple[str, list[str]]:
        """The worker's own environment (its ``sys.path`` outside any bundle), read once:
        executor=direct runs bundle code on it."""
        if self._packages is None:
            from ..packages import package_digest, package_list

            pkgs = package_list()
            self._packages = (package_digest(pkgs), pkgs)
        return self._packages

    def package_sets(self) -> dict[str, list[str]]:
        with _PROCESS_LOCK:
            return dict([self._package_set()]) if self._tasks else {}

    def shutdown(self) -> None:
        """Direct starts no processes: only the caches' directory goes."""
        with _PROCESS_LOCK:
            for name in self._set:
                os.environ.pop(name, None)
            caches, self._caches, self._set = self._caches, None, []
        if caches is not None:
            shutil.rmtree(caches, ignore_errors=True)

    def stats(self) -> dict:
        return {"executor": self.name, "tasks": self._tasks}

    # -- internals ---------------------------------------------------------------------

    def _run_locked(self, call: Call, bundle_dir: Path) -> object:
        root = os.path.realpath(bundle_dir)
        module_name, func_name = call.entrypoint.split(":", 1)
        sys.path.insert(0, root)
        importlib.invalidate_caches()
        bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # not into the bundle
        try:
            func = self._load(call, module_name, func_name, root)
            try:
                return func(*call.args)
            except ModuleNotFoundError as exc:
                raise self._missing(exc, call, bundle_dir) from None
            except ModelOpsError:
                raise
            except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt too
                raise _simulation_error(f"{call.kind} {call.entrypoint} of bundle "
                                        f"{call.bundle} raised", exc) from None
        finally:
            sys.dont_write_bytecode = bytecode
            while root in sys.path:
                sys.path.remove(root)
            sys.path_importer_cache.pop(root, None)
            for name in _bundle_modules(root):
                sys.modules.pop(name, None)

    def _load(self, call: Call, module_name: str, func_name: str, root: str):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            # the entrypoint module itself (or its package) is not in the bundle
            if module_name == missing or module_name.startswith(missing + "."):
                raise EntrypointError(
                    f"entrypoint {call.entrypoint}: module {module_name!r} is not in bundle "
                    f"{call.bundle}; check the module path (relative to the bundle root)",
                    entrypoint=call.entrypoint, bundle=call.bundle) from None
            raise self._missing(exc, call, Path(root)) from None
        except BaseException as exc:  # noqa: BLE001 - sys.exit() at import time too
            raise _simulation_error(f"importing {module_name} from bundle {call.bundle} raised",
                                    exc) from None
        if not _is_under(getattr(module, "__file__", None), root):
            raise EntrypointError(
                f"entrypoint {call.entrypoint}: module {module_name!r} resolved to "
                f"{getattr(module, '__file__', module)!r}, outside bundle {call.bundle}; "
                "rename the bundle module so it does not shadow an installed one",
                entrypoint=call.entrypoint, bundle=call.bundle)
        func = getattr(module, func_name, None)
        if not callable(func):
            raise EntrypointError(
                f"entrypoint {call.entrypoint}: module {module_name!r} of bundle "
                f"{call.bundle} has no function {func_name!r}",
                entrypoint=call.entrypoint, bundle=call.bundle)
        return func

    @staticmethod
    def _missing(exc: ModuleNotFoundError, call: Call,
                 bundle_dir: Path) -> BundleError | MissingDependencyError:
        """A module of the bundle itself that the bundle lacks (its top-level package or
        module is in the bundle directory), or a third-party module the worker lacks."""
        name = exc.name or ""
        where = name.replace(".", "/") + ".py"
        top = name.partition(".")[0]
        root = Path(bundle_dir)
        if top and ((root / top).is_dir() or (root / f"{top}.py").is_file()):
            return BundleError(
                f"{call.entrypoint}: bundle code imports {name!r}, a module of the bundle itself "
                f"({top!r} is in the bundle directory) that bundle {call.bundle} does not "
                f"contain. Add {where} to the bundle (or fix the import) and repack.",
                missing=name, entrypoint=call.entrypoint, bundle=call.bundle,
                remote_traceback="".join(traceback.format_exception(exc)))
        try:
            declared = read_dependencies(bundle_dir)
        except ModelOpsError:
            declared = []
        return MissingDependencyError(
            f"bundle {call.bundle} imports module {name!r}, which is not installed in "
            f"the Dask worker's own environment (the bundle declares: "
            f"{', '.join(declared) or 'no dependencies'}). executor=direct runs in the "
            "worker's environment and installs nothing: use executor isolated_warm, or "
            "install the dependency into the worker image (if it is your own code, add "
            f"{where} to the bundle directory)",
            module=name, declared=declared, bundle=call.bundle)


def _simulation_error(what: str, exc: BaseException) -> SimulationError:
    hint = ""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        hint = (" (the task failed and the worker goes on; a model must return its outputs "
                "instead of exiting)")
    return SimulationError(
        f"{what} {type(exc).__name__}: {exc}{hint}",
        remote_type=type(exc).__name__, remote_message=str(exc),
        remote_traceback="".join(traceback.format_exception(exc)))
