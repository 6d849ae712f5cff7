"""Fresh venvs (FORCE_FRESH_VENV) as clones of a pristine build.

Each task still gets a venv directory no task has used before, but uv runs once per
dependency set and host: it builds a *pristine* venv (resolution, install from uv's cache,
bytecode compiled, read-only; pristine.py) that no exec'd task runs in, and every such
task's venv is a hard-link clone of it. A clone costs a directory walk and a link per file
(tens of milliseconds for numpy) instead of a uv build (about a second with bytecode); and
because the bytecode is compiled once, a task process imports from .pyc files instead of
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
from pathlib import Path


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


__all__ = ["clone_tree"]
