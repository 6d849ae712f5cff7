"""Packing: the canonical tar stream of a bundle directory, stored in a repository."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError, BundleRepositoryError, UnsafeBundle
from .access import (bucket_problem, credentials_source, diagnose, is_object_store, protocol,
                     storage_options)

ARCHIVE_SUFFIX = ".tar.gz"
# the archive format, in a PAX global header: 2 = regular files and directories only (links
# dereferenced at pack time). Archives without it (format 1 allowed links) are refused.
FORMAT_KEY = "modelops.bundle-format"
FORMAT_VERSION = "2"
# never part of a bundle: byte-code caches differ per run and would change the digest
EXCLUDED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".venv"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1 << 20


def _refuse(path: Path, name: str, why: str, fix: str) -> UnsafeBundle:
    return UnsafeBundle(f"cannot pack {path}: {why}; {fix}", entry=name)


def _walk(source: Path) -> list[tuple[str, Path]]:
    """(archive name, real path) of every entry to pack, sorted by name. A link to a file or
    directory inside the bundle is packed as a copy of its target; a link leaving the
    bundle, a dangling link and a link to a directory containing it are refused."""
    root = source.resolve()
    entries: list[tuple[str, Path]] = []

    def visit(directory: Path, prefix: str, ancestors: frozenset[Path]) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            name, path = entry.name, Path(entry.path)
            arc = prefix + name
            if name.endswith(EXCLUDED_SUFFIXES):
                continue
            real = path
            if entry.is_symlink():
                target = os.readlink(path)
                real = path.resolve()
                if not real.is_relative_to(root):
                    raise _refuse(path, arc, f"symbolic link to {target!r} points outside the "
                                  f"bundle directory {source}",
                                  "copy the file into the bundle instead")
                if not real.exists():
                    raise _refuse(path, arc, f"symbolic link to {target!r} points to nothing",
                                  "remove the link or create its target")
            if real.is_dir():
                if name in EXCLUDED_DIRS:
                    continue
                if real in ancestors:
                    raise _refuse(path, arc, "symbolic link to a directory that contains it "
                                  "(a cycle)", "remove the link")
                entries.append((arc, real))
                visit(real, arc + "/", ancestors | {real})
            else:
                entries.append((arc, real))

    visit(source, "", frozenset({root}))
    return sorted(entries)


def _tarinfo(name: str, path: Path) -> tarfile.TarInfo:
    st = path.stat()  # links were resolved by _walk: this is the target
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    else:
        raise _refuse(path, name, "only regular files, directories and symbolic links to "
                      "them can be part of a bundle (devices, FIFOs and sockets cannot)",
                      "remove it from the bundle")
    return info


def write_canonical_tar(source: Path, out: BinaryIO) -> str:
    """Write the canonical tar stream of ``source`` to ``out``; return its sha256 hex."""
    source = Path(source)
    if not source.is_dir():
        raise BundleError(
            f"bundle directory {source} does not exist or is not a directory; pass the "
            "directory that holds the model's Python code")
    hasher = _HashingWriter(out)
    count = 0
    with tarfile.open(fileobj=hasher, mode="w|", format=tarfile.PAX_FORMAT,
                      pax_headers={FORMAT_KEY: FORMAT_VERSION}) as tar:
        for name, path in _walk(source):
            info = _tarinfo(name, path)
            if info.isreg():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
                count += 1
            else:
                tar.addfile(info)
    if count == 0:
        raise BundleError(f"bundle directory {source} holds no files; nothing to pack")
    return hasher.sha.hexdigest()


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha = out, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.out.write(data)
        return len(data)


def repo_fs(repo: str, environ: Mapping[str, str] | None = None):
    """(filesystem, root) of a repository; ``environ``: see access.storage_options."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(repo, **storage_options(repo, environ))
    except (ImportError, ValueError) as exc:
        raise BundleError(
            f"bundle repository {repo!r} cannot be opened: {exc}. Use a local path or an "
            "fsspec URL whose filesystem package is installed (e.g. s3:// needs s3fs)",
            repo=repo) from None


def archive_path(root: str, hexdigest: str) -> str:
    return f"{root.rstrip('/')}/{hexdigest}{ARCHIVE_SUFFIX}"


def pack(source: Path, repo: str, credentials: str | None = None,
         environ: Mapping[str, str] | None = None) -> str:
    """Pack ``source`` into the repository ``repo`` (a path or fsspec URL).

    Returns ``sha256:<hex>``. Packing the same files again yields the same reference (and
    rewrites the same archive). The upload goes to a temporary name first and is then
    renamed, so a crash never leaves a half archive under the final name. ``credentials``
    names where the credentials come from, for the error message (e.g. ``Secret x``);
    ``environ``: the environment whose AWS_* variables reach ``repo`` (default: this one).
    """
    fs, root = repo_fs(str(repo), environ)
    with tempfile.TemporaryFile() as tmp:
        with gzip.GzipFile(filename="", mode="wb", fileobj=tmp, mtime=0) as gz:
            hexdigest = write_canonical_tar(Path(source), gz)
        final = archive_path(root, hexdigest)
        partial = f"{root.rstrip('/')}/.partial-{uuid.uuid4().hex}"
        if is_object_store(str(repo)) and (problem := bucket_problem(fs, root)):
            raise _write_error(str(repo), problem, credentials, environ)
        try:
            if protocol(str(repo)) == "file":  # object stores have no directories: a
                fs.makedirs(root, exist_ok=True)  # missing bucket is an error, not made
            # always (re)written: packing again repairs a damaged copy under the same name
            tmp.seek(0)
            with fs.open(partial, "wb") as dst:
                shutil.copyfileobj(tmp, dst, _CHUNK)
            fs.mv(partial, final)
        except OSError as exc:
            if protocol(str(repo)) == "file":
                raise BundleError(
                    f"cannot write the bundle archive to repository {repo!r}: {exc}; check "
                    "the path/URL and its permissions", repo=str(repo)) from None
            raise _write_error(str(repo), diagnose(fs, root, exc), credentials,
                               environ) from None
        except Exception as exc:  # noqa: BLE001 - a client's own errors (botocore's)
            if protocol(str(repo)) == "file":
                raise
            raise _write_error(str(repo), diagnose(fs, root, exc), credentials,
                               environ) from None
    return f"sha256:{hexdigest}"


def _write_error(repo: str, why: str, credentials: str | None,
                 environ: Mapping[str, str] | None) -> BundleRepositoryError:
    source = credentials_source(repo, credentials, environ)
    return BundleRepositoryError(
        f"cannot write the bundle archive to repository {repo}: {why} ({source}); nothing "
        "was stored. Check the URL, the bucket and the credentials",
        repo=repo, credentials=source, cause=why)
