"""Private working directories of warm processes, under the worker's TMPDIR."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from .venvs.store import left_by_dead_local_process, owner_tag

SCRATCH_PREFIX = "modelops-warm-"  # + <host>-<pid>-<random>: a warm process's working dir


def make_scratch() -> Path:
    """A new, empty working directory for one warm process, under the worker's TMPDIR:
    model code writing relative paths writes here, never into the shared bundle cache, and
    no other process sees it. Removed with the process (:meth:`WarmProcess.stop`)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))


def remove_dead_scratch() -> None:
    """Scratch directories of warm processes whose worker process (of this host) died
    without stopping them (a SIGKILLed worker cannot clean up)."""
    with contextlib.suppress(OSError):
        for entry in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
            if left_by_dead_local_process(entry.name[len(SCRATCH_PREFIX):]):
                shutil.rmtree(entry, ignore_errors=True)
