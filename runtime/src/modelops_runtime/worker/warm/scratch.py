"""Private directories of warm processes under the worker's TMPDIR: each process's
scratch (its cwd, TMPDIR, HOME and per-process caches) and the pool's compile caches.

- Covers: creating them, removing them with their owner, and removing those of worker
  processes of this host that died without cleaning up; a template's task directories
  made anew from those its finished task processes left empty (:class:`TaskDirs`).
- Does not: decide what a process may write (confine.py's sandbox, from the paths the
  executor passes) or point variables at them (confine.own_places).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
from pathlib import Path

from .venvs.store import left_by_dead_local_process, owner_tag

SCRATCH_PREFIX = "modelops-warm-"  # + <host>-<pid>-<random>: a warm process's working dir
CACHES_PREFIX = "modelops-caches-"  # + <host>-<pid>-<random>: a worker process's compile caches


def make_scratch() -> Path:
    """A new, empty working directory for one warm process, under the worker's TMPDIR:
    model code writing relative paths writes here, never into the shared bundle cache, and
    no other process sees it. Removed with the process (:meth:`WarmProcess.stop`)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))


SPARE_TASK_DIRS = 4  # empty task directories a template keeps for its next task processes


class TaskDirs:
    """The task directories of one template's task processes, under its scratch: each new,
    empty, mode 0700, a random name. One whose task process has ended (with every process
    of its tree: nothing can reach it any more) and that is as a new directory is (empty,
    the size of one never filled, no extended attribute, ours) is renamed, its mode and
    times set as ``mkdir`` sets them, instead of removed and another made: a new directory
    costs an inode (on ext4 without a journal, a scan of every inode its group freed in the
    last half minute: 30-600 us of worker CPU per task measured on the bench VM), a rename
    none. What differs from a new one: its inode number and birth time."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._spare: list[Path] = []
        self._size: int | None = None  # st_size of a new empty directory here
        self._uid = os.getuid()

    def make(self) -> Path:
        """A new task directory (raises OSError as ``mkdir`` does)."""
        path = self.parent / f"task-{uuid.uuid4().hex[:16]}"  # a tenth of mkdtemp's cost
        while True:
            try:
                spare = self._spare.pop()
            except IndexError:
                break
            if self._renew(spare, path):
                return path
        os.mkdir(path, 0o700)
        if self._size is None:
            with contextlib.suppress(OSError):
                self._size = os.lstat(path).st_size
        return path

    def done(self, path: Path) -> None:
        """``path``'s task process and every process it started are gone: kept for a next
        task process if it is empty (checked again then), else removed now."""
        with contextlib.suppress(OSError):
            if (self._size is not None and len(self._spare) < SPARE_TASK_DIRS
                    and not os.listdir(path)):
                self._spare.append(path)
                return
        _remove(path)

    def _renew(self, spare: Path, path: Path) -> bool:
        try:
            st = os.lstat(spare)
            if (stat.S_ISDIR(st.st_mode) and st.st_size == self._size and st.st_nlink == 2
                    and st.st_uid == self._uid and not os.listxattr(spare, follow_symlinks=False)
                    and not os.listdir(spare)):
                if stat.S_IMODE(st.st_mode) != 0o700:
                    os.chmod(spare, 0o700)
                os.utime(spare)  # accessed and modified now, as a new one
                os.rename(spare, path)  # (its change time: now)
                return True
        except OSError:
            pass
        _remove(spare)
        return False


def empty_dir(path: Path | None) -> bool:
    """``path`` is a directory holding nothing (False if it cannot be read)."""
    try:
        return path is not None and not os.listdir(path)
    except OSError:
        return False


def _remove(path: Path) -> None:
    try:  # most tasks leave it empty: one call
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


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
