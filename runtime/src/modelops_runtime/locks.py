"""The one lock helper: an exclusive lock on a file, across processes and threads."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    flock(2) locks belong to an open file description, and every call opens its own, so
    the lock excludes other threads of this process as well as other processes (also other
    pods on a shared volume that supports flock). The kernel drops it when the file is
    closed, or when the holder dies."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
