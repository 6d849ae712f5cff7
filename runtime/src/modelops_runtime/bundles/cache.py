"""Leases and garbage collection of a cache directory of immutable entries (unpacked
bundles, venv generations), shared by the worker processes of a pod (and by pods, on a
shared volume).

- A user of an entry holds a **lease**: a shared ``flock`` on ``.locks/<entry>.use`` for
  as long as it uses the entry (a warm process's lifetime, a direct task). Taking one
  stamps the lock file's mtime: the entry's last use, for LRU.
- **Collection** takes ``.locks/gc.lock`` exclusively without blocking (one collector at
  a time; a busy one is skipped, never waited for), then removes entries whose lease it can
  take exclusively without blocking — nobody uses them — first the obsolete ones
  (superseded venv generations), then least recently used first while the entries'
  total size is above the budget. An entry is renamed away before it is deleted, so a
  half-deleted entry is never visible under its name; a user who opened the lock file
  before it went re-checks that the entry exists once its shared lock is granted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .readonly import remove_tree

LOCKS = ".locks"
TRASH_PREFIX = ".trash-"
log = logging.getLogger("modelops_runtime.cache")


@dataclass(frozen=True)
class Collected:
    """What one collection removed."""

    entries: int = 0
    bytes: int = 0


def tree_bytes(path: Path, seen: set[tuple[int, int]]) -> int:
    """Disk bytes of ``path`` counting each inode once across calls sharing ``seen`` (venvs
    hard-link the same files from uv's cache)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


class CacheEntries:
    """Leases and collection for the entries (direct children) of ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.locks = self.root / LOCKS

    def _lock_file(self, name: str) -> Path:
        return self.locks / f"{name}.use"

    def lease(self, name: str, *, unpublished: bool = False) -> int | None:
        """A shared lock on entry ``name`` as an open fd (close it to release), or None if
        the entry does not exist (never created, or collected meanwhile). ``unpublished``:
        the entry is about to be renamed into place by the caller; the lease is taken
        first, so a collection never finds it unused in between."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not unpublished and not (self.root / name).is_dir():  # collected meanwhile
                os.close(fd)
                return None
            with contextlib.suppress(OSError):
                os.utime(fd)  # last use
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd

    def last_used(self, name: str) -> float:
        for path in (self._lock_file(name), self.root / name):
            with contextlib.suppress(OSError):
                return path.stat().st_mtime
        return 0.0

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[bool]:
        """Try the entry's lease exclusively, without waiting: True if nobody uses it."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def remove(self, name: str, before_removal=None) -> bool:
        """Remove entry ``name`` if nobody holds a lease on it (``before_removal()`` runs
        first, under the exclusive lock: e.g. unpublishing it)."""
        with self._exclusive(name) as free:
            if not free:
                return False
            if before_removal is not None:
                before_removal()
            trash = self.root / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.root / name, trash)
            except FileNotFoundError:
                return False
            with contextlib.suppress(OSError):
                self._lock_file(name).unlink()  # waiters re-check the entry and retry
        remove_tree(trash)
        return True

    def collect(self, entries: Iterable[str], *, budget: int | None,
                obsolete: Iterable[str] = (), unpublish=None) -> Collected | None:
        """One collection over ``entries`` (names under root); None if another collector
        is running. ``unpublish(name)`` runs before an entry is removed."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with open(self.locks / "gc.lock", "a+b") as gc_lock:
            try:
                fcntl.flock(gc_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return None
            seen: set[tuple[int, int]] = set()
            sizes = {name: tree_bytes(self.root / name, seen) for name in entries}
            removed, freed = 0, 0

            def drop(name: str) -> bool:
                nonlocal removed, freed
                hook = (lambda: unpublish(name)) if unpublish is not None else None
                if self.remove(name, hook):
                    removed, freed = removed + 1, freed + sizes.pop(name)
                    log.info("cache %s: removed %s (%s)", self.root, name,
                             "superseded" if name in stale else "least recently used")
                    return True
                return False

            stale = set(obsolete) & set(sizes)
            for name in sorted(stale):
                drop(name)
            if budget is not None:
                for name in sorted(sizes, key=self.last_used):
                    if sum(sizes.values()) <= budget:
                        break
                    drop(name)
                if sum(sizes.values()) > budget:
                    log.warning("cache %s is %d bytes, above its budget of %d bytes: every "
                                "remaining entry is in use", self.root, sum(sizes.values()),
                                budget)
            return Collected(removed, freed)
