"""Read-only trees: published bundles and venvs are made read-only (files 0444 or 0555,
directories 0555) before they are renamed into place, and removed with :func:`remove_tree`
(which restores the owner's write bit on directories first: without it a non-root owner
could not unlink their entries)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def make_read_only(root: Path, *, include_root: bool = True) -> None:
    """Drop every write bit below ``root`` (symlinks are left alone: their mode is unused)."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    if include_root:
        os.chmod(root, 0o555)


def _writable_again(func, path, exc_info) -> None:
    """rmtree's error hook: give the parent directory its write bit back and retry. A path
    already gone is fine (another process may be removing the same leftovers); a directory
    rmtree could not open or list is removed again once readable."""
    if isinstance(exc_info[1], FileNotFoundError):
        return
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        if func in (os.rmdir, os.unlink, os.remove):
            func(path)
        else:  # os.open, os.scandir, os.lstat: the directory itself failed
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a read-only tree included); missing is fine, errors are ignored."""
    path = Path(path)
    try:
        if not path.is_symlink() and path.is_dir():
            os.chmod(path, 0o700)
            for dirpath, dirnames, _ in os.walk(path):
                for name in dirnames:
                    full = os.path.join(dirpath, name)
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, onerror=_writable_again)
