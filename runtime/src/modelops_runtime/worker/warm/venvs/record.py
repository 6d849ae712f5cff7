"""A cached venv's file record: what a finished build holds, file by file, and whether
the venv still holds exactly that (MODELOPS_VALIDATE_DEPS).

- covers: writing the record as the last step of a build (every regular file's size,
  mtime, ctime and sha256; every symbolic link's target) and checking a venv against it;
  at the build, comparing each installed file with the sha256 its distribution's RECORD
  lists (a venv's files are hard links of uv's cache's, so an edit in place of one venv
  changes the cache, and every later build would link the edited file).
  A file whose size, mtime and ctime are as recorded is unchanged without being read: a
  write sets the ctime, and no unprivileged process can set a ctime back (``utime`` sets
  atime and mtime only). A file whose times moved but whose size did not is read and
  hashed: a hard link added or removed (uv linking the same wheel file from its cache
  into another venv, its cache collected) moves the ctime of an unchanged file, so only
  the content decides. Any other difference (size, a file added, deleted, or a link
  retargeted) fails at once.
- does not: decide when to check (check.py: once per worker process per venv, and again
  when its fingerprint or a site-packages directory changes); guard against root, who
  can set the clock (the check is about mistakes and stray writes, docs/modes.md).
- skips: the fingerprint and this record (written after the scan), the runner program
  directories (``PROGRAM_PREFIX``: compiled into the venv and replaced when damaged by
  runner/program.py, which checks them itself), and byte code that appears under
  ``__pycache__`` after the build (an import as root may write it; Python uses it only
  when it matches its recorded source).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path

RECORD = "modelops-venv-files.json"
PROGRAM_PREFIX = "modelops-runner-"  # runner/program.py: <venv>/modelops-runner-<digest>


def _skipped_at_top(name: str, fingerprint: str) -> bool:
    return (name in (RECORD, fingerprint, fingerprint + ".tmp")
            or name.lstrip(".").startswith(PROGRAM_PREFIX))


def _entries(venv: Path, fingerprint: str) -> Iterator[tuple[str, os.stat_result, str]]:
    """(relative path, lstat, absolute path) of every non-directory entry below ``venv``."""
    stack = [("", os.fspath(venv))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            for entry in it:
                if not rel_dir and _skipped_at_top(entry.name, fingerprint):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel, entry.path))
                else:
                    yield rel, st, entry.path


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def scan(venv: Path, fingerprint: str) -> dict:
    """What ``venv`` holds now, to be written by :func:`write_record` (call it once nothing
    more changes: after the build made its files read-only)."""
    files: dict[str, list] = {}
    links: dict[str, str] = {}
    for rel, st, path in _entries(venv, fingerprint):
        if stat.S_ISLNK(st.st_mode):
            links[rel] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            files[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, _sha256(path)]
        else:
            links[rel] = f"<special file {stat.S_IFMT(st.st_mode):o}>"
    return {"files": files, "links": links}


class PackagesChanged(Exception):
    """Files a build installed differ from their packages (``changed``: distribution name →
    files): uv linked them from a cache that was changed through another venv's links."""

    def __init__(self, changed: dict[str, list[str]]) -> None:
        super().__init__(changed)
        self.changed = changed


def not_as_packaged(venv: Path, record: dict) -> dict[str, list[str]]:
    """The files of ``record`` (:func:`scan`) whose sha256 is not the one their
    distribution's RECORD lists, by distribution name (empty: all as packaged)."""
    changed: dict[str, list[str]] = {}
    files = record["files"]
    for site in sorted(Path(venv).glob("lib/python*/site-packages")):
        site_rel = site.relative_to(venv).as_posix()
        for info in sorted(site.glob("*.dist-info")):
            try:
                with open(info / "RECORD", newline="", encoding="utf-8") as fh:
                    rows = list(csv.reader(fh))
            except (OSError, UnicodeDecodeError, csv.Error):
                continue  # nothing to compare with (the record still covers its files)
            for row in rows:
                if len(row) < 2 or not row[1].startswith("sha256="):
                    continue
                rel = posixpath.normpath(f"{site_rel}/{row[0]}")
                entry = files.get(rel)
                if entry is None:
                    continue  # not installed as a regular file (the record has what is)
                want = base64.urlsafe_b64decode(row[1][7:] + "=" * (-len(row[1][7:]) % 4))
                if bytes.fromhex(entry[3]) != want:
                    changed.setdefault(info.name.split("-")[0], []).append(rel)
    return changed


def write_record(venv: Path, record: dict) -> str:
    """Write ``record`` (:func:`scan`) into ``venv``; returns its sha256 for the
    fingerprint."""
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    target = Path(venv) / RECORD
    target.write_bytes(blob)
    os.chmod(target, 0o444)
    return hashlib.sha256(blob).hexdigest()


def record_problem(venv: Path, fingerprint: str, digest: str) -> str | None:
    """Why ``venv`` no longer holds what its record (of sha256 ``digest``) says, or None."""
    try:
        blob = (Path(venv) / RECORD).read_bytes()
    except OSError as exc:
        return f"its file record is unreadable ({exc})"
    if hashlib.sha256(blob).hexdigest() != digest:
        return "its file record is not the one its fingerprint names"
    try:
        record = json.loads(blob)
        files, links = record["files"], record["links"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"its file record is unreadable ({exc!r})"
    seen = set()
    try:
        for rel, st, path in _entries(venv, fingerprint):
            problem = _entry_problem(rel, st, path, files, links)
            if problem:
                return problem
            seen.add(rel)
    except OSError as exc:  # removed or made unreadable while we looked
        return f"it cannot be read ({exc})"
    missing = (files.keys() | links.keys()) - seen
    if missing:
        return f"its file {min(missing)} was deleted after it was built"
    return None


def _entry_problem(rel: str, st: os.stat_result, path: str, files: dict,
                   links: dict) -> str | None:
    if stat.S_ISREG(st.st_mode) and rel in files:
        size, mtime, ctime, sha = files[rel]
        if st.st_size != size:
            return f"its file {rel} changed after it was built (size {size} → {st.st_size})"
        if (st.st_mtime_ns, st.st_ctime_ns) == (mtime, ctime):
            return None  # not written since it was recorded
        if _sha256(path) != sha:
            return f"its file {rel} changed after it was built (same size, other content)"
        return None  # a link to it was made or removed, or it was touched
    if stat.S_ISLNK(st.st_mode) and rel in links:
        target = os.readlink(path)
        return None if target == links[rel] else (
            f"its link {rel} was changed after it was built ({links[rel]} → {target})")
    if rel in files or rel in links:
        return f"its file {rel} was replaced by another kind of file after it was built"
    if "/__pycache__/" in f"/{rel}" and rel.endswith(".pyc"):
        return None  # byte code written by an import after the build (as root)
    return f"a file {rel} was added to it after it was built"


__all__ = ["PROGRAM_PREFIX", "RECORD", "PackagesChanged", "not_as_packaged", "record_problem",
           "scan", "write_record"]
