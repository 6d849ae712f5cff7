"""Where a results store lives: its fsspec filesystem, and whole-object writes that a
reader sees complete or not at all.

- covers: opening a store URL (a directory or any fsspec URL) with one clear line when its
  filesystem package is missing or, on an object store, its bucket or credentials are wrong
  (the cause and the credential variables' names, never their values); atomic puts (local: temp name, fsync, rename; object
  stores: one put of the whole object); the store's typed errors.
- does not: know what a part or a manifest holds (parts.py, manifest.py).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from ...bundles.access import (cause, credentials_source, diagnose, is_object_store,
                               storage_options)
from ...errors import ModelOpsError

TMP_PREFIX = "_tmp-"   # pyarrow and pandas skip names starting with "_" or "."


class ResultsStoreError(ModelOpsError):
    """A results store cannot be used as asked (URL, permissions, damaged content)."""


class StoreInputsDiffer(ResultsStoreError):
    """The store holds runs of other inputs than this study's."""


def open_fs(url: str) -> tuple[Any, str]:
    """(filesystem, root path) of a store URL; a missing filesystem package or an unknown
    protocol is one line saying what to install."""
    import fsspec.core

    try:
        import pyarrow.parquet  # noqa: F401 - the parts are Parquet
    except ImportError:
        raise ResultsStoreError(
            f"results store {url}: results stores are Parquet, which needs pyarrow, not "
            "installed here; pip install pyarrow (or 'modelops-runtime[parquet]')") from None
    try:
        fs, root = fsspec.core.url_to_fs(str(url), **storage_options(str(url)))
    except ImportError as exc:
        proto = str(url).split("://", 1)[0]
        raise ResultsStoreError(
            f"results store {url}: the {proto}:// filesystem needs a package that is not "
            f"installed here ({exc}); install it (e.g. pip install s3fs for s3://, gcsfs for "
            "gs://, adlfs for az://) or give a local directory") from None
    except ValueError as exc:
        raise ResultsStoreError(f"results store {url}: not a URL fsspec can open ({exc}); "
                                "give a directory or an fsspec URL such as s3://bucket/prefix"
                                ) from None
    return fs, root.rstrip("/") or root


def is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def put_atomic(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` as ``path`` so that a reader sees all of it or nothing: on a local
    disk a temp name in the same directory (fsync'd) renamed over ``path``; on an object
    store one put of the whole object (object stores publish a put whole)."""
    if is_local(fs):
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    fs.pipe_file(path, data)


def not_writable(url: str, exc: BaseException) -> ResultsStoreError:
    if "://" in str(url) and not str(url).startswith("file://"):
        why = f"{cause(exc)} ({credentials_source(str(url))})"
    else:
        why = f"({type(exc).__name__}: {exc})"
    return ResultsStoreError(
        f"results store {url} is not writable {why}; nothing was "
        "run and nothing in it was changed. Give a store you can write (or fix its "
        f"permissions); read it with `modelops-runtime results {url}`")


def not_readable(url: str, exc: BaseException, fs: Any = None,
                 root: str = "") -> ResultsStoreError:
    """A store that cannot even be looked at: for an object store, the cause in the user's
    terms (asking the bucket again with ``fs`` when the first answer had no reason) and
    where the credentials came from (names only)."""
    if "://" in str(url) and not str(url).startswith("file://"):
        why = diagnose(fs, root, exc) if fs is not None else cause(exc)
        why = f"{why} ({credentials_source(str(url))})"
    else:
        why = f"({type(exc).__name__}: {exc})"
    return ResultsStoreError(f"results store {url} cannot be read: {why}. Check the URL, "
                             "the bucket and the credentials")


def manifest_exists(fs: Any, root: str, url: str, manifest: str) -> bool:
    """Whether the store at ``root`` has its manifest. On an object store a missing one is
    told apart from a bucket that does not exist or a key pair that is refused (listing
    the bucket): those raise :func:`not_readable`'s one line."""
    try:
        if fs.exists(f"{root}/{manifest}"):
            return True
        if is_object_store(url):
            fs.ls(root.split("/", 1)[0], detail=False, refresh=True)
        return False
    except Exception as exc:  # noqa: BLE001 - OSError, and a client's own (botocore's)
        raise not_readable(url, exc, fs, root) from None
