"""Keeping uv's cache (UV_CACHE_DIR, on the venv volume) within MODELOPS_UV_CACHE_MAX_BYTES.

uv never shrinks its cache by itself, and a pod that builds many dependency sets would grow
it until the kubelet evicts the pod for its volume's sizeLimit. After each venv build the
store calls :meth:`UvCacheGC.collect`: if the cache is above its budget, ``uv cache prune``
(unused entries), then, if still above, ``uv cache clean`` (everything). A build that finds
files of the cache changed (record.py) removes their packages from it (:meth:`forget`).

What is counted is what cleaning frees: the bytes only the cache holds. uv links a venv's
files from its cache (hard links, UV_LINK_MODE=hardlink), so a file that is also in a venv
is counted by the venv budget (MODELOPS_VENVS_MAX_BYTES) and stays on disk, and the venv
keeps working, after the cache forgets it. The volume then holds at most both budgets.

Concurrency: uv itself takes a shared lock on ``<cache>/.lock`` for every command that uses
the cache and an exclusive one for ``prune`` and ``clean``, which wait for it (they never
remove files a running build uses). So that a task never waits for another worker
process's build, the collector first tries that lock without waiting and skips this round
if any uv holds it (a later build tries again), and gives uv a short UV_LOCK_TIMEOUT for the
moment between. One collector per pod at a time (``.locks/uv-cache-gc.lock`` under the
venv store, not waited for either).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from dask.utils import format_bytes

from .uv import uv_bin, run_uv

log = logging.getLogger("modelops_runtime.venvs")

LOCK_TIMEOUT = 10  # s uv's prune/clean waits for a build that started after our check
RUN_TIMEOUT = 600.0  # s a prune or clean may take before it is killed


def cache_bytes(root: Path) -> tuple[int, int]:
    """(bytes only ``root`` holds, bytes of everything under it), on disk, each inode once.
    A file is the cache's own when all its links are inside ``root``."""
    sizes: dict[tuple[int, int], int] = {}
    inside: dict[tuple[int, int], int] = {}
    own = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                ino = (st.st_dev, st.st_ino)
                inside[ino] = inside.get(ino, 0) + 1
                if ino not in sizes:
                    sizes[ino] = st.st_blocks * 512
                if inside[ino] == (1 if name in dirnames else st.st_nlink):
                    own += sizes[ino]  # its last link inside the cache: nothing else holds it
    return own, sum(sizes.values())


class UvCacheGC:
    """Collection of uv's cache for a venv store. ``env()``: uv's environment (its
    UV_CACHE_DIR names the cache); ``locks``: the store's lock directory."""

    def __init__(self, env: Callable[[], dict[str, str]], locks: Path,
                 max_bytes: int | None) -> None:
        self.env = env
        self.locks = locks
        self.max_bytes = max_bytes

    def collect(self) -> tuple[int, int] | None:
        """Prune (and if needed clean) the cache if it is above its budget: (own bytes
        before, after), or None if nothing was done."""
        if self.max_bytes is None:
            return None
        try:
            return self._collect()
        except OSError as exc:  # e.g. the volume full: the build itself succeeded
            log.warning("uv cache not collected: %s", exc)
            return None

    def forget(self, packages: list[str]) -> bool:
        """``uv cache clean <packages>``: their next install reads them again (a build found
        files of theirs in the cache changed, record.py). Waits LOCK_TIMEOUT at most for a
        running uv; False (warned) if it did not run."""
        env = self.env()
        root = Path(env["UV_CACHE_DIR"])
        return self._run("clean", root, {**env, "UV_LOCK_TIMEOUT": str(LOCK_TIMEOUT)},
                         packages)

    def _collect(self) -> tuple[int, int] | None:
        env = self.env()
        root = Path(env["UV_CACHE_DIR"])
        if not root.is_dir():
            return None
        sizes = cache_bytes(root)  # a walk of the cache: a small cost beside a uv build
        if sizes[0] <= self.max_bytes:
            return None
        self.locks.mkdir(parents=True, exist_ok=True)
        with open(self.locks / "uv-cache-gc.lock", "a+b") as ours:
            if not _try_lock(ours.fileno()):
                return None  # another worker process of the pod is collecting
            if _in_use(root):
                log.info("uv cache %s is above its budget of %s but in use by a uv build; "
                         "it is pruned after a later build", root, format_bytes(self.max_bytes))
                return None
            return self._shrink(root, {**env, "UV_LOCK_TIMEOUT": str(LOCK_TIMEOUT)}, sizes)

    def _shrink(self, root: Path, env: dict[str, str],
                sizes: tuple[int, int]) -> tuple[int, int] | None:
        before, before_all = sizes
        steps = []
        after = before
        for command in ("prune", "clean"):
            if after <= self.max_bytes:
                break
            if not self._run(command, root, env):
                break
            after = cache_bytes(root)[0]
            steps.append(f"uv cache {command} → {format_bytes(after)}")
        if steps:
            log.info("uv cache %s: %s of its own (%s with files venvs share) above its budget "
                     "of %s: %s", root, format_bytes(before), format_bytes(before_all),
                     format_bytes(self.max_bytes), "; ".join(steps))
            return before, after
        return None

    def _run(self, command: str, root: Path, env: dict[str, str],
             packages: list[str] = ()) -> bool:
        try:
            proc = run_uv([uv_bin(), "cache", command, *packages], env=env, cwd=root.parent,
                          timeout=RUN_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("uv cache %s of %s did not run: %s", command, root, exc)
            return False
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-2000:]
            log.warning("uv cache %s of %s failed (exit code %d; it is tried again after the "
                        "next build): %s", command, root, proc.returncode, output)
            return False
        return True


def _try_lock(fd: int, how: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _in_use(root: Path) -> bool:
    """True if a uv process holds uv's lock on the cache (any uv command using it)."""
    try:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return not _try_lock(fd)  # released at once by the close below
    finally:
        os.close(fd)


__all__ = ["UvCacheGC", "cache_bytes"]
