"""Fresh venvs (FORCE_FRESH_VENV) as clones of a pristine build.

Each task still gets a venv directory no task has used before, but uv runs once per
dependency set and worker process: it builds a *pristine* venv (resolution, install from
uv's cache, bytecode compiled, read-only) that no task ever runs in, and every task's venv
is a hard-link clone of it. A clone costs a directory walk and a link per file (tens of
milliseconds for numpy) instead of a uv build (about a second with bytecode); and because
the bytecode is compiled once, a task process imports from .pyc files instead of
compiling every module in memory.

What a clone shares with the pristine venv is what a uv build already shares with uv's
cache (uv links files from its cache, see venvs.py): read-only inodes. Task processes
cannot write there (read-only modes plus the runner's Landlock sandbox), so no task can
change what a later task's venv holds. What the fresh-venv mode rules out is unchanged:
a cached venv that was modified, stale, or built from another resolution than today's.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ....bundles import remove_tree


def clone_tree(source: Path, dest: Path) -> None:
    """``dest`` as a copy of ``source`` made of hard links (symbolic links copied as
    links), read-only like the source. ``dest`` must not exist; on failure the caller
    removes what was made."""
    dirs = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        target = os.path.join(dest, rel) if rel != "." else str(dest)
        os.mkdir(target, 0o700)
        dirs.append(target)
        for name in dirnames[:]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):  # os.walk does not follow it: copy the link itself
                os.symlink(os.readlink(path), os.path.join(target, name))
                dirnames.remove(name)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), os.path.join(target, name))
            else:
                os.link(path, os.path.join(target, name))
    for path in reversed(dirs):  # read-only like the source, deepest first
        os.chmod(path, 0o555)


class Pristines:
    """One pristine venv per dependency set, built on first use by ``build(path, key,
    requirements)`` into ``name(key)``; thread-safe. A failed build is not remembered (the
    next fresh venv tries again, as a build per task did)."""

    def __init__(self, build: Callable[[Path, str, Sequence[str]], None],
                 name: Callable[[str], Path]) -> None:
        self._build = build
        self._name = name
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._paths: dict[str, Path] = {}

    def get(self, key: str, requirements: Sequence[str]) -> Path:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            path = self._paths.get(key)
            if path is not None and path.is_dir():
                return path
            path = self._name(key)
            try:
                self._build(path, key, requirements)
            except BaseException:
                remove_tree(path)
                raise
            self._paths[key] = path
            return path

    def paths(self) -> list[Path]:
        with self._lock:
            return list(self._paths.values())

    def close(self) -> None:
        """Remove every pristine venv (the worker is stopping; clones are removed by their
        users: they are links, not dependent on the pristine one)."""
        with self._lock:
            paths, self._paths = list(self._paths.values()), {}
        for path in paths:
            remove_tree(path)


__all__ = ["Pristines", "clone_tree"]
