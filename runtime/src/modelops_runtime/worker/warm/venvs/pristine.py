"""Pristine venvs (FORCE_FRESH_VENV): one uv build per dependency set and host, shared by
the host's worker processes whose lifetimes overlap, never taken from the cache.

- covers: finding or building the host's pristine venv of a key under a host-wide lock
  (``.locks/<prefix><key>.lock``), a lease on it (a shared ``flock``, bundles/cache.py)
  held by every worker process using it and inherited by its templates, and its removal
  by the last user. A worker process joins a pristine venv only while another one holds
  a lease on it and it is as built (its fingerprint's installed digest); one that nobody
  holds is left from earlier worker processes and is removed, never used.
- does not: build (the store's ``build``) or clone (clones.py); decide what a task may
  write (the runner's sandbox: it can write into no venv, which is why one build can
  serve every task, see docs/modes.md "diagnose-fresh-venv").
- names: ``.fresh-<host>-pristine-<key>-<id>``; other hosts' (pods on a shared volume)
  are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ....bundles import remove_tree
from ....bundles.cache import CacheEntries
from ...packages import installed_digest
from .uv import UvAbort, stopped

log = logging.getLogger("modelops_runtime.venvs")

LOCK_POLL = 0.02  # s between tries of the host lock while a sibling builds (abortable)


def host_prefix() -> str:
    """What this host's pristine venvs' names start with."""
    return f".fresh-{socket.gethostname()}-pristine-"


class Pristines:
    """This worker process's pristine venvs under ``root``, one per dependency set,
    shared with the host's other worker processes; thread-safe. ``build(path, key,
    requirements)`` builds one (a failed build is not remembered: the next call tries
    again); ``fingerprint``: the name of the file a finished build holds."""

    def __init__(self, root: Path, build: Callable[[Path, str, Sequence[str]], None],
                 fingerprint: str) -> None:
        self.root = Path(root)
        self.entries = CacheEntries(self.root)
        self._build = build
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._held: dict[str, tuple[str, int]] = {}  # key → (name, our lease fd)
        self.built = 0  # pristine venvs this process built (the others it joined)

    def get(self, key: str, requirements: Sequence[str], abort: UvAbort | None = None) -> Path:
        """The host's pristine venv of ``key``, found or built; leased until :meth:`close`."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            held = self._held.get(key)
            if held is not None:
                return self.root / held[0]
            with self._host_lock(key, abort, requirements):
                found = self._join(key) or self._new(key, requirements)
            with self._lock:
                self._held[key] = found
            return self.root / found[0]

    def lease(self, key: str) -> int | None:
        """A new fd of our lease on ``key``'s pristine venv (a process started in it keeps
        it alive by inheriting it); None if we hold none."""
        with self._lock:
            held = self._held.get(key)
        return None if held is None else os.dup(held[1])

    def _join(self, key: str) -> tuple[str, int] | None:
        """A pristine venv of ``key`` another live worker process holds, leased, if it is
        as built; unheld ones are removed (left by worker processes that are gone)."""
        for path in sorted(self.root.glob(f"{host_prefix()}{key}-*")):
            if self.entries.remove(path.name):  # nobody holds it: never used again
                log.info("removed %s, a pristine venv no worker process holds", path.name)
                continue
            fd = self.entries.lease(path.name)
            if fd is None:  # removed meanwhile
                continue
            problem = self._problem(path)
            if problem is None:
                log.info("using %s, the pristine venv another worker process of this host "
                         "built for this dependency set", path.name)
                return path.name, fd
            os.close(fd)
            log.warning("pristine venv %s is not shared: %s; building another", path.name,
                        problem)
        return None

    def _problem(self, path: Path) -> str | None:
        try:
            fingerprint = json.loads((path / self._fingerprint).read_text())
        except (OSError, ValueError):
            return "it has no readable fingerprint"
        if not isinstance(fingerprint, dict) or "installed" not in fingerprint:
            return "its fingerprint lists nothing installed"
        if installed_digest(path) != fingerprint["installed"]:
            return "its installed distributions changed after it was built"
        return None

    def _new(self, key: str, requirements: Sequence[str]) -> tuple[str, int]:
        """Build a new pristine venv of ``key``, leased before it exists (a sibling's sweep
        never takes a build in progress for a leftover)."""
        name = f"{host_prefix()}{key}-{uuid.uuid4().hex[:12]}"
        fd = self.entries.lease(name, unpublished=True)
        try:
            self._build(self.root / name, key, requirements)
        except BaseException:
            remove_tree(self.root / name)
            os.close(fd)
            raise
        self.built += 1
        return name, fd

    @contextlib.contextmanager
    def _host_lock(self, key: str, abort: UvAbort | None,
                   requirements: Sequence[str]) -> Iterator[None]:
        """The host-wide lock of ``key``'s pristine venv; waiting for it (while a sibling
        builds) ends when ``abort`` is aborted."""
        self.entries.locks.mkdir(parents=True, exist_ok=True)
        with open(self.entries.locks / f"{host_prefix()}{key}.lock", "a+b") as fh:
            while True:
                if abort is not None and abort.aborted:
                    raise stopped(requirements)
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if abort else 0))
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    abort.wait(LOCK_POLL)
            yield

    def sweep(self) -> None:
        """Remove this host's pristine venvs that no worker process holds (left by worker
        processes that are gone): at a worker process's start."""
        for path in self.root.glob(f"{host_prefix()}*"):
            if self.entries.remove(path.name):
                log.info("removed %s, a pristine venv no worker process holds", path.name)

    def paths(self) -> list[Path]:
        with self._lock:
            return [self.root / name for name, _ in self._held.values()]

    def close(self) -> None:
        """Release our leases, and remove each pristine venv nobody else holds (the last
        worker process using one removes it); idempotent."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for name, fd in held:
            os.close(fd)
            self.entries.remove(name)


__all__ = ["Pristines", "host_prefix"]
