"""Private directories of warm processes under the worker's TMPDIR: each process's
scratch (its cwd, TMPDIR, HOME and per-process caches) and the pool's compile caches.

- Covers: creating them, removing them with their owner, and removing those of worker
  processes of this host that died without cleaning up.
- Does not: decide what a process may write (confine.py's sandbox, from the paths the
  executor passes) or point variables at them (confine.own_places).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

from .venvs.store import left_by_dead_local_process, owner_tag

SCRATCH_PREFIX = "modelops-warm-"  # + <host>-<pid>-<random>: a warm process's working dir
CACHES_PREFIX = "modelops-caches-"  # + <host>-<pid>-<random>: a worker process's compile caches


def make_scratch() -> Path:
    """A new, empty working directory for one warm process, under the worker's TMPDIR:
    model code writing relative paths writes here, never into the shared bundle cache, and
    no other process sees it. Removed with the process (:meth:`WarmProcess.stop`)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))


class CompileCaches:
    """One compile cache directory (numba's NUMBA_CACHE_DIR) per (venv, bundle) for the warm
    processes of one worker process: what numba compiled in one task is loaded by the next
    process of the same venv and bundle instead of compiled again. Only the processes of
    that venv and bundle may write it (the runner's sandbox), so no bundle can change
    another's compiled code. Removed at shutdown; a fresh venv gets none (its process keeps
    its compile cache in its own scratch)."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._lock = threading.Lock()

    def directory(self, venv_path: Path, bundle_ref: str) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix=f"{CACHES_PREFIX}{owner_tag()}-"))
            path = self._root / f"{venv_path.name}-{bundle_ref.rpartition(':')[2][:16]}" / "numba"
            path.mkdir(parents=True, exist_ok=True)
            return path

    @property
    def root(self) -> Path | None:
        """The directory holding them (None until the first is made): this worker
        process's own."""
        return self._root

    def close(self) -> None:
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def remove_dead_scratch() -> None:
    """Scratch and compile cache directories of worker processes (of this host) that died
    without removing them (a SIGKILLed worker cannot clean up)."""
    with contextlib.suppress(OSError):
        for prefix in (SCRATCH_PREFIX, CACHES_PREFIX):
            for entry in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
                if left_by_dead_local_process(entry.name[len(prefix):]):
                    shutil.rmtree(entry, ignore_errors=True)
