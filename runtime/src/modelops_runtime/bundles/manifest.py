"""The manifest of an unpacked bundle: every file's size and sha256 as unpacked from the
verified archive, kept beside the bundle cache (never inside the bundle: bundle code sees
exactly the archive's files), and the check of a tree against it.

- covers: writing a manifest, naming the first difference between a tree and its manifest
  (a write bit given back by a ``chmod`` counts), a cheap stat snapshot of a tree.
- does not: decide what to do about a difference (store.py re-unpacks the bundle).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20
FORMAT = 1


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _walk(tree: Path) -> tuple[dict[str, Path], list[str]]:
    """Files (relative POSIX path → path) and directories of ``tree``, links refused by
    the caller's comparison (a link is neither a file nor a directory here)."""
    files: dict[str, Path] = {}
    dirs: list[str] = []
    others: list[str] = []
    for root, subdirs, names in os.walk(tree):
        base = Path(root)
        rel = base.relative_to(tree).as_posix()
        for d in subdirs:
            p = base / d
            (dirs if not p.is_symlink() else others).append(
                d if rel == "." else f"{rel}/{d}")
        for n in names:
            p = base / n
            key = n if rel == "." else f"{rel}/{n}"
            if p.is_symlink() or not p.is_file():
                others.append(key)
            else:
                files[key] = p
    if others:
        files.update({k: tree / k for k in others})  # compared as files: they differ
    return files, sorted(dirs)


_ANY_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def snapshot(tree: Path) -> tuple:
    """Every entry's (path, inode, mode, size, mtime, ctime), ``tree`` itself included: any
    write, ``chmod``, rename, removal or addition changes it, and a process without
    privileges cannot set a ctime back. Stats only (no reads): cheap enough per task."""
    entries = []
    for root, subdirs, names in os.walk(tree):
        for name in (".", *subdirs, *names):
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                st = None
            entries.append((root, name) + ((st.st_ino, st.st_mode, st.st_size,
                                            st.st_mtime_ns, st.st_ctime_ns) if st else ()))
    return tuple(entries)


def write_manifest(tree: Path, dest: Path) -> None:
    """Record ``tree`` (just unpacked from a verified archive) into ``dest``, atomically."""
    files, dirs = _walk(tree)
    doc = {"format": FORMAT, "dirs": dirs,
           "files": {k: [p.stat().st_size, _digest(p)] for k, p in sorted(files.items())}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, dest)


def tree_problem(tree: Path, manifest: Path) -> str | None:
    """What differs between ``tree`` and its manifest (the first thing found), or None."""
    try:
        doc = json.loads(manifest.read_text())
        expected = doc["files"]
        if doc.get("format") != FORMAT:
            return f"its manifest has format {doc.get('format')!r}, not {FORMAT}"
    except FileNotFoundError:
        return "it has no manifest (unpacked by an older modelops-runtime, or removed)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest is unreadable ({exc})"
    try:
        files, dirs = _walk(tree)
        if sorted(files) != sorted(expected):
            extra = sorted(set(files) - set(expected))
            missing = sorted(set(expected) - set(files))
            return (f"its files differ from the archive's (added: {extra[:5]}, "
                    f"missing: {missing[:5]})")
        if dirs != doc.get("dirs", dirs):
            return "its directories differ from the archive's"
        writable = [key for key in (".", *dirs, *files)
                    if os.lstat(tree / key).st_mode & _ANY_WRITE]
        if writable:
            return f"{writable[0]} is writable again (bundles are read-only once unpacked)"
        for key, (size, digest) in expected.items():
            path = files[key]
            if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
                return f"{key} changed (its size or type)"
            if _digest(path) != digest:
                return f"{key} changed (its content no longer hashes to the archive's)"
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return None
