"""Fetching, verifying and unpacking bundles into the pod's bundle cache; an unpacked bundle
is checked against its manifest (manifest.py) the first time a worker process uses it (and,
asked with ``recheck``, again whenever its stat snapshot changed since), and unpacked again
if it changed on disk."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import (BundleDigestMismatch, BundleError, BundleNotFound,
                      BundleRepositoryError, ConfigError, UnsafeBundle)
from ..locks import file_lock
from ..models import BUNDLE_REF
from .access import credentials_source, diagnose, is_object_store, protocol
from .pack import ARCHIVE_SUFFIX, FORMAT_KEY, FORMAT_VERSION, archive_path, repo_fs
from .cache import CacheEntries, Collected
from .bytecode import bytecode_dir, compile_bundle, remove_bytecode
from .manifest import snapshot, tree_problem, write_manifest
from .readonly import make_read_only, remove_tree

if TYPE_CHECKING:
    from ..config import RuntimeConfig

_CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")  # an unpacked bundle's directory name
log = logging.getLogger("modelops_runtime.bundles")


def _check_members(members: list[tarfile.TarInfo], ref: str) -> None:
    """Refuse every entry that is not a regular file or directory strictly inside the
    bundle: links of any kind (also ones pointing inside), devices, FIFOs, absolute
    names, '..', duplicates."""
    seen: set[str] = set()
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
            why = (f"is a link (to {m.linkname!r}); bundles hold regular files and "
                   "directories only")
        elif not (m.isreg() or m.isdir()):
            why = "is not a regular file or directory"
        elif not p.parts or posixpath.normpath(m.name) != m.name.rstrip("/") or "\0" in m.name:
            why = "is not a normalised relative path"
        elif m.name.rstrip("/") in seen:
            why = "appears twice"
        if why:
            raise UnsafeBundle(
                f"bundle {ref} is unsafe: archive entry {m.name!r} {why}; it was not unpacked. "
                "Re-pack the bundle with `modelops-runtime bundle pack`",
                ref=ref, entry=m.name)
        seen.add(m.name.rstrip("/"))

class BundleStore:
    """Fetches bundles from ``config.bundle_repo`` into ``config.bundle_cache_dir``.

    ``path(ref)`` is thread-safe and process-safe: concurrent callers for the same
    bundle (threads of one worker process, or other worker processes of the pod) wait for
    one unpack, and everybody gets the same complete directory.
    """

    def __init__(self, config: "RuntimeConfig") -> None:
        self.repo = config.bundle_repo
        self.credentials = config.bundle_credentials  # where they come from, for messages
        self.cache_dir = Path(config.bundle_cache_dir)
        self.max_bytes = config.bundles_max_bytes
        self.entries = CacheEntries(self.cache_dir)
        self.on_collect: Callable[[Collected], None] | None = None  # e.g. counting in stats
        # bundles this process checked against their manifest → their stat snapshot then
        self._verified: dict[str, tuple] = {}

    def path(self, ref: str, recheck: bool = False) -> Path:
        """The unpacked directory of bundle ``ref`` (fetched and verified on first use).
        ``recheck``: verified again if anything of it changed on disk since (executor
        direct: bundle code runs with the worker's own rights, which can ``chmod``)."""
        if not isinstance(ref, str) or not BUNDLE_REF.fullmatch(ref):
            raise BundleError(
                f"bundle reference {ref!r} is not of the form 'sha256:<64 lowercase hex>'; "
                "use the reference printed by `modelops-runtime bundle pack`", ref=ref)
        hexdigest = ref.split(":", 1)[1]
        final = self.cache_dir / hexdigest
        if final.is_dir():  # complete: only ever created by an atomic rename
            if hexdigest in self._verified:
                if not recheck or snapshot(final) == self._verified[hexdigest]:
                    return final
                del self._verified[hexdigest]  # changed since: checked under the lock
            else:
                seen = snapshot(final)  # before the check: a change during it shows later
                if self._intact(final, hexdigest) is None:
                    compile_bundle(final, final)  # unpacked by an older runtime: none yet
                    self._verified[hexdigest] = seen
                    return final
        with self._file_lock(hexdigest):
            if final.is_dir():
                seen = snapshot(final)
                problem = self._intact(final, hexdigest)
                if problem is None:
                    self._verified[hexdigest] = seen
                    return final
                log.warning("unpacked bundle %s is not used: %s; unpacking it again from the "
                            "repository", ref, problem)
                junk = self.cache_dir / f".trash-{hexdigest}-{uuid.uuid4().hex[:8]}"
                os.rename(final, junk)
                remove_tree(junk)
                remove_bytecode(final)
            self._fetch_and_unpack(ref, hexdigest, final)
            self._verified[hexdigest] = snapshot(final)
        self.collect(keep=hexdigest)  # never the one just fetched for our caller
        return final

    def _manifest(self, hexdigest: str) -> Path:
        return self.cache_dir / ".manifests" / f"{hexdigest}.json"

    def _intact(self, final: Path, hexdigest: str) -> str | None:
        """None if ``final`` holds exactly the archive's files, else what differs."""
        return tree_problem(final, self._manifest(hexdigest))

    def lease(self, ref: str, recheck: bool = False) -> tuple[Path, int]:
        """The unpacked directory of ``ref`` (``recheck``: as :meth:`path`) and an open fd
        holding a shared lock on it: until the fd is closed, garbage collection never
        removes the bundle."""
        for _ in range(5):  # collected between path() and the lock: fetch it again
            final = self.path(ref, recheck)
            fd = self.entries.lease(final.name)
            if fd is not None:
                return final, fd
        raise BundleError(f"bundle {ref} was removed from the cache again and again while "
                          "being leased; raise MODELOPS_BUNDLES_MAX_BYTES "
                          "(worker.cache.bundlesBudget)", ref=ref)

    def collect(self, keep: str = "") -> None:
        """Remove bundles nobody uses (but ``keep``), least recently used first, while the
        cache is above its budget (MODELOPS_BUNDLES_MAX_BYTES)."""
        if self.max_bytes is None or not self.cache_dir.is_dir():
            return
        names = [e.name for e in self.cache_dir.iterdir()
                 if _HEX.match(e.name) and e.name != keep]
        done = self.entries.collect(names, budget=self.max_bytes,
                                    unpublish=lambda name: remove_bytecode(self.cache_dir / name))
        if done and done.entries and self.on_collect is not None:
            self.on_collect(done)

    # -- internals ---------------------------------------------------------------------

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
        with file_lock(lock_dir / f"{hexdigest}.lock"):
            yield

    def _fetch_and_unpack(self, ref: str, hexdigest: str, final: Path) -> None:
        if not self.repo:
            raise ConfigError(
                f"cannot fetch bundle {ref}: MODELOPS_BUNDLE_REPO is not set; set it to the "
                "repository the bundle was packed into (a path or an fsspec URL)",
                variable="MODELOPS_BUNDLE_REPO", value=None,
                allowed="a path or an fsspec URL")
        # leftovers of a crashed unpack of this bundle: never used, safe to drop under the lock
        for stale in self.cache_dir.glob(f".tmp-{hexdigest}-*"):
            remove_tree(stale)
        for stale in bytecode_dir(final).parent.glob(f".tmp-{hexdigest}-*"):
            remove_tree(stale)
        work = self.cache_dir / f".tmp-{hexdigest}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            archive = work / "archive.tar.gz"
            self._download(ref, hexdigest, archive)
            self._verify(ref, hexdigest, archive)
            tree = work / "tree"
            tree.mkdir()
            self._extract(ref, archive, tree)
            write_manifest(tree, self._manifest(hexdigest))  # before it is published
            compile_bundle(tree, final)  # beside it, as it will be named (bytecode.py)
            os.rename(tree, final)
            os.chmod(final, 0o555)  # after the rename: moving a directory needs its write bit
        finally:
            remove_tree(work)
        log.info("bundle %s fetched, verified and unpacked into %s", ref, final)

    def _download(self, ref: str, hexdigest: str, dest: Path) -> None:
        fs, root = repo_fs(self.repo)
        src = archive_path(root, hexdigest)
        remote = protocol(self.repo) != "file"
        try:
            with fs.open(src, "rb") as fin, dest.open("wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
        except FileNotFoundError:
            if is_object_store(self.repo) and (missing := self._missing_bucket(fs, root)):
                raise self._access_error(ref, missing) from None
            where = f" ({credentials_source(self.repo, self.credentials)})" if remote else ""
            raise BundleNotFound(
                f"bundle {ref} is not in repository {self.repo}{where} (no "
                f"{hexdigest}{ARCHIVE_SUFFIX}); pack it there with `modelops-runtime bundle "
                f"pack DIR --repo {self.repo}` and use the reference it prints",
                ref=ref, repo=self.repo) from None
        except Exception as exc:  # noqa: BLE001 - OSError, and a client's own (botocore's)
            if not remote and not isinstance(exc, OSError):
                raise
            if not remote:
                raise BundleError(
                    f"cannot fetch bundle {ref} from repository {self.repo!r}: {exc}",
                    ref=ref, repo=self.repo) from None
            raise self._access_error(ref, diagnose(fs, root, exc)) from None

    def _access_error(self, ref: str, why: str) -> BundleRepositoryError:
        source = credentials_source(self.repo, self.credentials)
        return BundleRepositoryError(
            f"cannot fetch bundle {ref} from repository {self.repo}: {why} ({source}); "
            "nothing was cached. Check the URL, the bucket and the credentials "
            "(docs/bundles-s3.md)", ref=ref, repo=self.repo, credentials=source, cause=why)

    @staticmethod
    def _missing_bucket(fs, root: str) -> str | None:
        """For an object store: "the bucket does not exist" when the repository's bucket
        is missing (a missing object alone looks the same as a missing bucket)."""
        bucket = root.split("/", 1)[0]
        try:
            return None if fs.exists(bucket) else f"the bucket {bucket!r} does not exist"
        except Exception:  # noqa: BLE001 - cannot tell: the object is missing, say that
            return None

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
        """Unpack by hand: directories with mkdir, files with O_CREAT|O_EXCL|O_NOFOLLOW, in a
        fresh private directory in which no link can exist (none is ever created), so
        nothing can land outside ``dest`` whatever tarfile's version does with links."""
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                fmt = tar.pax_headers.get(FORMAT_KEY)
                if fmt != FORMAT_VERSION:
                    raise BundleError(
                        f"bundle {ref} has archive format {fmt or '1'} (packed by an older "
                        f"modelops-runtime); this worker unpacks format {FORMAT_VERSION} only. "
                        "Re-pack the bundle with `modelops-runtime bundle pack` and use the "
                        "new reference it prints", ref=ref, format=fmt or "1")
                _check_members(members, ref)
                for m in members:
                    target = dest.joinpath(*PurePosixPath(m.name).parts)
                    if m.isdir():
                        target.mkdir(mode=0o755, parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o755 if m.mode & 0o100 else 0o644)
                    with os.fdopen(fd, "wb") as out, tar.extractfile(m) as src:
                        shutil.copyfileobj(src, out, _CHUNK)
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(f"bundle {ref} cannot be unpacked: {exc}", ref=ref) from None
        make_read_only(dest, include_root=False)
