"""Bundles: pack a model directory into a content-addressed archive, fetch, verify, unpack.

A bundle's reference is ``sha256:<hex>`` of its *canonical tar stream*: entries sorted by
path, owner/group/mtimes zeroed, modes normalised to 0644/0755. The repository stores that
stream gzip-compressed as ``<hex>.tar.gz``; hashing the uncompressed stream keeps the
digest independent of the compressor's version. Workers unpack each bundle once per pod
(``bundle_cache_dir/<hex>``) under a cross-process file lock, into a private temporary
directory that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import threading
import re
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import (BundleDigestMismatch, BundleError, BundleNotFound, ConfigError,
                     UnsafeBundle)
from .models import BUNDLE_REF

if TYPE_CHECKING:
    from .config import RuntimeConfig

ARCHIVE_SUFFIX = ".tar.gz"
# never part of a bundle: byte-code caches differ per run and would change the digest
EXCLUDED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".venv"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1 << 20
_COMMENT = re.compile(r"(?:^|\s)#")

log = logging.getLogger("modelops_runtime.bundles")


def read_dependencies(bundle_dir: Path) -> list[str]:
    """The bundle's declared third-party dependencies, normalised and sorted.

    Read from ``requirements.txt`` (one requirement a line, ``#`` comments) or, if absent,
    ``pyproject.toml``'s ``[project].dependencies``. Names are canonicalised
    (``Scikit_Learn`` → ``scikit-learn``) so equal dependency sets compare equal.
    """
    bundle_dir = Path(bundle_dir)
    req_file = bundle_dir / "requirements.txt"
    pyproject = bundle_dir / "pyproject.toml"
    if req_file.is_file():
        # a comment starts a line or follows white space (as pip reads it): a '#' inside
        # a URL (`pkg @ https://…/x.whl#sha256=…`) is part of the requirement
        lines = [_COMMENT.split(ln, 1)[0].strip() for ln in req_file.read_text().splitlines()]
        source, raw = req_file.name, [ln for ln in lines if ln]
    elif pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BundleError(f"{pyproject} is not valid TOML: {exc}") from None
        source, raw = pyproject.name, list(data.get("project", {}).get("dependencies", []))
    else:
        return []
    out = []
    for line in raw:
        if line.startswith("-"):
            raise BundleError(
                f"{source}: option line {line!r} is not supported in a bundle; list plain "
                "requirements only and configure indexes with uv's UV_* variables")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise BundleError(f"{source}: invalid requirement {line!r}: {exc}") from None
        req.name = canonicalize_name(req.name)
        out.append(str(req))
    return sorted(set(out))


# -- packing ---------------------------------------------------------------------------


def _walk(source: Path) -> Iterator[tuple[str, Path]]:
    """(archive name, path) of every entry to pack, sorted by name for determinism."""
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]
        base = Path(dirpath)
        for name in dirnames + filenames:
            if name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = base / name
            entries.append((path.relative_to(source).as_posix(), path))
    return iter(sorted(entries))


def _tarinfo(source: Path, name: str, path: Path) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        resolved = (path.parent / target).resolve()
        if os.path.isabs(target) or not resolved.is_relative_to(source.resolve()):
            raise UnsafeBundle(
                f"cannot pack {path}: symbolic link to {target!r} points outside the bundle "
                f"directory {source}; copy the file into the bundle instead",
                entry=name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    else:
        raise UnsafeBundle(
            f"cannot pack {path}: only regular files, directories and symbolic links can be "
            "part of a bundle (devices, FIFOs and sockets cannot); remove it from the bundle",
            entry=name)
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
    with tarfile.open(fileobj=hasher, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path in _walk(source):
            info = _tarinfo(source, name, path)
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


def _repo_fs(repo: str):
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(repo)
    except (ImportError, ValueError) as exc:
        raise BundleError(
            f"bundle repository {repo!r} cannot be opened: {exc}. Use a local path or an "
            "fsspec URL whose filesystem package is installed (e.g. s3:// needs s3fs)",
            repo=repo) from None


def _archive_path(root: str, hexdigest: str) -> str:
    return f"{root.rstrip('/')}/{hexdigest}{ARCHIVE_SUFFIX}"


def pack(source: Path, repo: str) -> str:
    """Pack ``source`` into the repository ``repo`` (a path or fsspec URL).

    Returns ``sha256:<hex>``. Packing the same files again yields the same reference (and
    rewrites the same archive). The upload goes to a temporary name first and is then
    renamed, so a crash never leaves a half archive under the final name.
    """
    fs, root = _repo_fs(str(repo))
    with tempfile.TemporaryFile() as tmp:
        with gzip.GzipFile(filename="", mode="wb", fileobj=tmp, mtime=0) as gz:
            hexdigest = write_canonical_tar(Path(source), gz)
        final = _archive_path(root, hexdigest)
        try:
            fs.makedirs(root, exist_ok=True)
            # always (re)written: packing again repairs a damaged copy under the same name
            partial = f"{root.rstrip('/')}/.partial-{uuid.uuid4().hex}"
            tmp.seek(0)
            with fs.open(partial, "wb") as dst:
                shutil.copyfileobj(tmp, dst, _CHUNK)
            fs.mv(partial, final)
        except OSError as exc:
            raise BundleError(
                f"cannot write the bundle archive to repository {repo!r}: {exc}; check the "
                "path/URL and its permissions", repo=str(repo)) from None
    return f"sha256:{hexdigest}"


# -- fetching and unpacking ----------------------------------------------------------


def _check_members(members: list[tarfile.TarInfo], ref: str) -> None:
    """Refuse every entry that could write outside the bundle directory."""
    for m in members:
        p = PurePosixPath(m.name)
        why = None
        if m.name.startswith("/") or p.is_absolute():
            why = "is an absolute path"
        elif ".." in p.parts:
            why = "contains '..'"
        elif m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            why = "is a device or FIFO"
        elif m.issym() or m.islnk():
            # symlink targets are relative to the link's directory, hard links to the root
            base = posixpath.dirname(m.name) if m.issym() else ""
            target = posixpath.normpath(posixpath.join(base, m.linkname))
            if posixpath.isabs(m.linkname) or target == ".." or target.startswith("../"):
                why = f"is a link to {m.linkname!r} outside the bundle"
        elif not (m.isreg() or m.isdir()):
            why = "is not a regular file or directory"
        if why:
            raise UnsafeBundle(
                f"bundle {ref} is unsafe: archive entry {m.name!r} {why}; it was not unpacked. "
                "Re-pack the bundle with `modelops-runtime bundle pack`",
                ref=ref, entry=m.name)


class BundleStore:
    """Fetches bundles from ``config.bundle_repo`` into ``config.bundle_cache_dir``.

    ``path(ref)`` is thread-safe and process-safe: concurrent callers for the same
    bundle (threads of one worker process, or other worker processes of the pod) wait for
    one unpack, and everybody gets the same complete directory.
    """

    def __init__(self, config: "RuntimeConfig") -> None:
        self.repo = config.bundle_repo
        self.cache_dir = Path(config.bundle_cache_dir)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def path(self, ref: str) -> Path:
        """The unpacked directory of bundle ``ref`` (fetched and verified on first use)."""
        if not isinstance(ref, str) or not BUNDLE_REF.match(ref):
            raise BundleError(
                f"bundle reference {ref!r} is not of the form 'sha256:<64 lowercase hex>'; "
                "use the reference printed by `modelops-runtime bundle pack`", ref=ref)
        hexdigest = ref.split(":", 1)[1]
        final = self.cache_dir / hexdigest
        if final.is_dir():  # complete: only ever created by an atomic rename
            return final
        with self._thread_lock(hexdigest), self._file_lock(hexdigest):
            if final.is_dir():
                return final
            self._fetch_and_unpack(ref, hexdigest, final)
        return final

    # -- internals ---------------------------------------------------------------------

    def _thread_lock(self, hexdigest: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(hexdigest, threading.Lock())

    @contextlib.contextmanager
    def _file_lock(self, hexdigest: str) -> Iterator[None]:
        lock_dir = self.cache_dir / ".locks"
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"bundle cache directory {self.cache_dir} cannot be created: {exc}; set "
                "MODELOPS_BUNDLE_CACHE_DIR to a writable directory",
                variable="MODELOPS_BUNDLE_CACHE_DIR", value=str(self.cache_dir),
                allowed="a writable directory") from None
        with open(lock_dir / f"{hexdigest}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed (or we die)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _fetch_and_unpack(self, ref: str, hexdigest: str, final: Path) -> None:
        if not self.repo:
            raise ConfigError(
                f"cannot fetch bundle {ref}: MODELOPS_BUNDLE_REPO is not set; set it to the "
                "repository the bundle was packed into (a path or an fsspec URL)",
                variable="MODELOPS_BUNDLE_REPO", value=None,
                allowed="a path or an fsspec URL")
        # leftovers of a crashed unpack of this bundle: never used, safe to drop under the lock
        for stale in self.cache_dir.glob(f".tmp-{hexdigest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = self.cache_dir / f".tmp-{hexdigest}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            archive = work / "archive.tar.gz"
            self._download(ref, hexdigest, archive)
            self._verify(ref, hexdigest, archive)
            tree = work / "tree"
            tree.mkdir()
            self._extract(ref, archive, tree)
            os.rename(tree, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("bundle %s fetched, verified and unpacked into %s", ref, final)

    def _download(self, ref: str, hexdigest: str, dest: Path) -> None:
        fs, root = _repo_fs(self.repo)
        src = _archive_path(root, hexdigest)
        try:
            with fs.open(src, "rb") as fin, dest.open("wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
        except FileNotFoundError:
            raise BundleNotFound(
                f"bundle {ref} is not in repository {self.repo!r} (no {hexdigest}{ARCHIVE_SUFFIX}); "
                "pack it there with `modelops-runtime bundle pack DIR --repo "
                f"{self.repo}` and use the reference it prints", ref=ref, repo=self.repo) from None
        except OSError as exc:
            raise BundleError(
                f"cannot fetch bundle {ref} from repository {self.repo!r}: {exc}",
                ref=ref, repo=self.repo) from None

    @staticmethod
    def _verify(ref: str, hexdigest: str, archive: Path) -> None:
        sha = hashlib.sha256()
        try:
            with gzip.open(archive, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    sha.update(chunk)
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise BundleError(
                f"bundle {ref} is truncated or corrupt in the repository ({exc}); it was not "
                "unpacked. Re-pack the bundle with `modelops-runtime bundle pack`",
                ref=ref) from None
        if sha.hexdigest() != hexdigest:
            raise BundleDigestMismatch(
                f"bundle {ref} failed verification: its content hashes to "
                f"sha256:{sha.hexdigest()}; the repository copy was altered or replaced. "
                "Re-pack the bundle with `modelops-runtime bundle pack`",
                ref=ref, actual=f"sha256:{sha.hexdigest()}")

    @staticmethod
    def _extract(ref: str, archive: Path, dest: Path) -> None:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                _check_members(members, ref)
                # the stdlib "data" filter is a second line of defence behind _check_members
                tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise UnsafeBundle(f"bundle {ref} is unsafe: {exc}; it was not unpacked",
                               ref=ref) from None
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(f"bundle {ref} cannot be unpacked: {exc}", ref=ref) from None
