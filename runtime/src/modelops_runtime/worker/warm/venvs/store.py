"""Venv cache: one virtualenv per dependency set, built with uv, shared by a pod's workers.

Key = hash of the bundle's normalised requirements + Python version/ABI + platform, so
bundles with equal dependencies share a venv. A build goes into a temporary directory,
writes its fingerprint last and is renamed into place, under a cross-process lock (one
build per key per pod). Anything without a valid fingerprint is a build that died
half-way: it is removed and rebuilt. uv's link mode is hardlink with one uv cache on the
same filesystem, so a venv costs links, not copies (uvcache.py keeps uv's cache within its
budget). Indexes, offline mode and find-links are uv's own ``UV_*`` variables, passed
through untouched.

The cache may be shared by several pods (a ReadWriteMany volume), and a pid means nothing
in another pod's PID namespace. So temporary builds and fresh venvs are named
``<prefix>…-<host>-<pid>-<random>`` (:func:`owner_tag`; the host name is the pod name), and
a worker removes such leftovers unlocked only if they are its own host's and that pid is
gone. Another pod's are never touched, except temporary builds of a key whose lock we hold
(nobody can be building it then).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ....bundles import make_read_only, remove_tree
from ....bundles.cache import CacheEntries
from ....errors import EnvironmentBuildError
from ....locks import file_lock
from ...packages import installed_digest
from ...counters import StatsRecorder
from .clones import clone_tree
from .pristine import Pristines
from .check import VenvCheck
from .record import PackagesChanged, not_as_packaged, scan, write_record
from ...limits import LIMIT_ERRNOS, limit_error
from .uvcache import UvCacheGC
from .uv import UvAbort, uv_bin, run_uv, stopped, uv_env, uv_failed
from .keys import (FINGERPRINT, FORMAT, left_by_dead_local_process, owner_tag,
                   python_identity, venv_key, venv_python)

log = logging.getLogger("modelops_runtime.venvs")

_TMP_PREFIX = ".tmp-"
_FRESH_PREFIX = ".fresh-"
_TRASH_PREFIX = ".trash-"
_GENERATION = re.compile(r"^[0-9a-f]{32}@[0-9a-f]{12}$")  # <key>@<id>: one venv generation
FAILED_BUILD_MEMORY = 30.0  # s a permanently failed build of a key is answered from memory
# a transient build failure (uv.transient_cause) is retried after these pauses, then raised
# as it is and never remembered
BUILD_RETRY_DELAYS = (1.0, 4.0)

@dataclass(frozen=True)
class Venv:
    """A ready venv. ``cache_hit``: it existed (or another process built it) — we did not build."""

    path: Path
    key: str
    cache_hit: bool
    fresh: bool = False
    # an open fd holding a shared lock on this venv generation (bundles/cache.py): while it
    # is open, garbage collection never removes the venv. The user closes it when done.
    lease: int | None = None
    # fds a warm process started in this venv inherits and holds for its lifetime (its
    # leases on the venv and its bundle): released by the kernel when it exits
    hold_fds: tuple[int, ...] = ()

    @property
    def python(self) -> Path:
        return venv_python(self.path)


class VenvCache:
    """Builds and hands out venvs under ``root`` (MODELOPS_VENVS_DIR). Thread-safe, and safe
    across the worker processes of a pod sharing ``root``."""

    def __init__(self, root: Path, *, validate: bool = True,
                 stats: StatsRecorder | None = None, build_timeout: float = 1800,
                 passthrough: Sequence[str] = (), allow_sdist_builds: bool = False,
                 prepare: Callable[[Path], None] | None = None,
                 max_bytes: int | None = None, uv_cache_max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.check = VenvCheck(validate)
        self.passthrough = tuple(passthrough)
        self.allow_sdist_builds = allow_sdist_builds
        self.prepare = prepare  # called on a finished build before it is made read-only
        self.stats = stats or StatsRecorder()
        self.build_timeout = build_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".locks").mkdir(exist_ok=True)
        self._failed: dict[str, tuple[float, EnvironmentBuildError]] = {}  # key → last failure
        self.max_bytes = max_bytes
        self.entries = CacheEntries(self.root)
        self.uv_cache = UvCacheGC(self._uv_env, self.root / ".locks", uv_cache_max_bytes)
        self._aborts = threading.local()  # .current: the UvAbort of this thread's fresh build
        # FORCE_FRESH_VENV: one uv build per dependency set and host (pristine.py), run in
        # by templates' task processes, cloned per task for exec'd ones (clones.py)
        self.pristines = Pristines(self.root, self._build, FINGERPRINT)
        self._remove_dead_leftovers()

    # -- public ---------------------------------------------------------------------

    def get(self, requirements: Sequence[str]) -> Venv:
        """The cached venv for ``requirements``, leased (close ``Venv.lease`` when done),
        building it if needed (one build per key).

        ``<root>/<key>`` is a symbolic link to the current generation ``<key>@<id>``: a
        published generation is never changed, renamed or removed in place. A rebuild
        (the current one failed validation) publishes a new generation by replacing the
        link atomically; the old one stays for the processes still using it until garbage
        collection finds it unused."""
        key = venv_key(requirements)
        venv = self._current(key, requirements)
        if venv is None:
            self._raise_recent_failure(key)
            with self._locked(key):
                # another thread or worker process may have built it while we waited
                venv = self._current(key, requirements, log_reason=True)
                if venv is None:
                    venv = self._build_generation(key, requirements)
            if not venv.cache_hit:
                self.collect()
        if venv.cache_hit:
            self.stats.incr("venv_hits")
        return venv

    def collect(self) -> None:
        """Remove unused superseded generations, and unused venvs least recently used first
        while the cache is above its budget (``max_bytes``)."""
        generations = [e.name for e in self.root.iterdir() if _GENERATION.match(e.name)]
        current = {self._current_name(key) for key in {g.split("@")[0] for g in generations}}
        done = self.entries.collect(generations, budget=self.max_bytes,
                                    obsolete=set(generations) - current,
                                    unpublish=self._unpublish)
        if done and done.entries:
            self.stats.incr("venvs_collected", done.entries)

    def _current_name(self, key: str) -> str | None:
        with contextlib.suppress(OSError):
            return os.readlink(self.root / key)
        return None

    def _current(self, key: str, requirements: Sequence[str],
                 log_reason: bool = False) -> Venv | None:
        """The current generation of ``key``, leased, if it is usable."""
        name = self._current_name(key)
        if name is None or not _GENERATION.match(name):
            return None
        lease = self.entries.lease(name)
        if lease is None:
            return None
        if not self._usable(self.root / name, key, requirements, log_reason):
            os.close(lease)
            return None
        return Venv(self.root / name, key, cache_hit=True, lease=lease)

    def _build_generation(self, key: str, requirements: Sequence[str]) -> Venv:
        """Build a new generation of ``key`` and publish it (we hold the key's lock)."""
        self.stats.incr("venv_misses")
        current = self._current_name(key)
        invalid = bool(current and (self.root / current / FINGERPRINT).exists())
        if invalid:
            self.stats.incr("venv_invalid")  # a complete venv failed validation
        self._remove_stale_builds(key)
        name = f"{key}@{uuid.uuid4().hex[:12]}"
        tmp = self.root / f"{_TMP_PREFIX}{key}-{owner_tag()}-{uuid.uuid4().hex[:8]}"
        try:
            try:
                # a venv may have been changed through uv's cache (its files are hard
                # links of the cache's): the rebuild reads the packages again
                self._build(tmp, key, requirements, refresh=invalid)
            except EnvironmentBuildError as exc:
                if not (getattr(exc, "transient", None) or getattr(exc, "timed_out", False)):
                    self._failed[key] = (time.monotonic(), exc)
                raise
            # leased before it appears under its name: a collection running meanwhile
            # (another worker process, another thread's build) would find it unused, not
            # yet current, and remove it under the task about to start in it
            lease = self.entries.lease(name, unpublished=True)
            try:
                os.rename(tmp, self.root / name)
            except BaseException:
                os.close(lease)
                raise
        finally:
            remove_tree(tmp)
        published = self.root / key
        if published.is_dir() and not published.is_symlink():  # not ours: never a venv
            junk = self.root / f"{_TRASH_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            os.rename(published, junk)
            remove_tree(junk)
        link = self.root / f".link-{name}"
        os.symlink(name, link)
        os.replace(link, published)  # atomic: users see the old or the new one
        return Venv(self.root / name, key, cache_hit=False, lease=lease)

    def _unpublish(self, name: str) -> None:
        """Collection is removing generation ``name``: drop the link if it points there."""
        key = name.split("@")[0]
        if self._current_name(key) == name:
            with contextlib.suppress(OSError):
                os.unlink(self.root / key)

    def _raise_recent_failure(self, key: str) -> None:
        """A build of ``key`` failed less than FAILED_BUILD_MEMORY seconds ago: fail the same
        way at once instead of running uv again for every task of the bundle."""
        failed = self._failed.get(key)
        if failed is None:
            return
        when, exc = failed
        ago = time.monotonic() - when
        if ago >= FAILED_BUILD_MEMORY:
            self._failed.pop(key, None)
            return
        raise EnvironmentBuildError(
            f"{exc.message}\n(This build failed {ago:.0f}s ago in this worker process; it is "
            f"tried again {FAILED_BUILD_MEMORY:.0f}s after the failure.)",
            **exc.fields)

    def fresh(self, requirements: Sequence[str], abort: UvAbort | None = None) -> Venv:
        """A new venv for one task (FORCE_FRESH_VENV): a clone of this process's pristine
        build of the set (clones.py); the caller removes it with :meth:`remove`.
        ``abort.abort()`` (another thread) kills the pristine build's uv if this call runs
        it, and removes what was made."""
        key = venv_key(requirements)
        path = self.root / f"{_FRESH_PREFIX}{owner_tag()}-{uuid.uuid4().hex[:12]}"
        self.stats.incr("venv_misses")
        if abort is not None:
            abort.path = path
        self._aborts.current = abort  # the pristine build's uv, if this task starts it
        try:
            clone_tree(self.pristines.get(key, requirements, abort), path)
            if abort is not None and abort.aborted:
                raise stopped(requirements)
        except OSError as exc:
            remove_tree(path)
            raise limit_error(exc, "cloning a fresh venv") from exc
        except BaseException:
            remove_tree(path)
            raise
        finally:
            self._aborts.current = None
        return Venv(path, key, cache_hit=False, fresh=True)

    def pristine(self, requirements: Sequence[str], abort: UvAbort | None = None) -> Venv:
        """The host's pristine uv build of the set (FORCE_FRESH_VENV from a template,
        pristine.py): never taken from the cache, never run in by a task before the worker
        processes sharing it started; task processes cannot write into it (read-only
        files, Landlock), so each observes it as just built. Leased (close ``lease``; a
        process started in it inherits it); removed by ``pristines.close()`` of its last
        user."""
        key = venv_key(requirements)
        self._aborts.current = abort
        try:
            path = self.pristines.get(key, requirements, abort)
        finally:
            self._aborts.current = None
        return Venv(path, key, cache_hit=False, fresh=True, lease=self.pristines.lease(key))

    def remove(self, venv: Venv) -> None:
        remove_tree(venv.path)

    # -- validation -----------------------------------------------------------------

    def _usable(self, dest: Path, key: str, requirements: Sequence[str],
                log_reason: bool = False) -> bool:
        problem = self.check.problem(dest, key, requirements)
        if problem and log_reason and dest.exists():
            log.warning("cached venv %s is not reused: %s; rebuilding it", dest, problem)
        return problem is None

    # -- building -------------------------------------------------------------------

    def _build(self, path: Path, key: str, requirements: Sequence[str], *,
               refresh: bool = False) -> None:
        """Build into ``path``, retrying a transient failure (a killed uv, a full disk, the
        network) after each of BUILD_RETRY_DELAYS; a permanent one is raised at once.
        ``refresh``: uv reads every package again (a cache of its own for this build)
        instead of linking what the shared uv cache holds; a build that finds files of uv's
        cache changed does so too, after removing their packages from the cache."""
        try:
            return self._build_retrying(path, key, requirements, refresh)
        except PackagesChanged as exc:  # e.g. a cached venv's file edited in place
            names = sorted(exc.changed)
            log.warning("uv's cache holds changed files of %s (%s is not as its RECORD says): "
                        "removing them from uv's cache and building venv %s again from the "
                        "packages", ", ".join(names), exc.changed[names[0]][0], key)
            remove_tree(path)
            self.uv_cache.forget(names)
            return self._build_retrying(path, key, requirements, True)

    def _build_retrying(self, path: Path, key: str, requirements: Sequence[str],
                        refresh: bool) -> None:
        for attempt, delay in enumerate((*BUILD_RETRY_DELAYS, None), start=1):
            try:
                return self._build_once(path, key, requirements, refresh)
            except EnvironmentBuildError as exc:
                cause = getattr(exc, "transient", None)
                if not cause:
                    raise
                if delay is None:
                    raise EnvironmentBuildError(
                        f"{exc.message}\n(Tried {attempt} times, pausing "
                        f"{', '.join(f'{d:g}s' for d in BUILD_RETRY_DELAYS)} between.)",
                        **{**exc.fields, "attempts": attempt}) from exc
                log.warning("venv build %s failed transiently (%s); trying again in %gs "
                            "(attempt %d of %d)", key, cause, delay, attempt + 1,
                            len(BUILD_RETRY_DELAYS) + 1)
                remove_tree(path)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _build_once(self, path: Path, key: str, requirements: Sequence[str],
                    refresh: bool = False) -> None:
        started = time.monotonic()
        log.info("building venv %s for [%s] with uv", key,
                 ", ".join(requirements) or "no dependencies")
        self._uv(["venv", "--relocatable", "--no-project", "--python", sys.executable,
                  str(path)], requirements)
        if requirements:
            req_file = path / "modelops-requirements.txt"
            req_file.write_text("\n".join(requirements) + "\n")
            # wheels only unless sdists are allowed: building one runs its build backend
            # (bundle-chosen code); bytecode compiled now, the venv is read-only after
            build = [] if self.allow_sdist_builds else ["--no-build"]
            if refresh:
                build.append("--no-cache")
            self._uv(["pip", "install", "--python", str(venv_python(path)), *build,
                      "--compile-bytecode", "-r", str(req_file)], requirements)
        fingerprint = {"key": key, "format": FORMAT, "requirements": sorted(requirements),
                       "python": python_identity(), "built_at": time.time(),
                       "installed": installed_digest(path)}
        if self.prepare is not None:
            self.prepare(path)
        make_read_only(path, include_root=False)  # warm processes may run it, never change it
        # recorded once nothing in it changes any more (a chmod moves a file's ctime)
        record = scan(path, FINGERPRINT)
        if changed := not_as_packaged(path, record):
            if not refresh:
                raise PackagesChanged(changed)
            log.warning("venv %s: files of %s differ from their RECORD even read from the "
                        "packages (the packages' own inconsistency); kept as installed", key,
                        ", ".join(sorted(changed)))
        fingerprint["files"] = write_record(path, record)
        tmp_fp = path / (FINGERPRINT + ".tmp")
        tmp_fp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        os.chmod(tmp_fp, 0o444)
        os.replace(tmp_fp, path / FINGERPRINT)  # written last: its presence means "complete"
        os.chmod(path, 0o555)
        seconds = time.monotonic() - started
        self.stats.venv_built(seconds)
        log.info("built venv %s in %.1fs", key, seconds)
        self.uv_cache.collect()  # uv's cache within MODELOPS_UV_CACHE_MAX_BYTES (uvcache.py)

    def _uv_env(self) -> dict[str, str]:
        return uv_env(self.root.parent / "uv-cache", self.passthrough)

    def _uv(self, args: list[str], requirements: Sequence[str]) -> None:
        cmd = [uv_bin(), *args]
        abort = getattr(self._aborts, "current", None)
        if abort is not None and abort.aborted:
            raise stopped(requirements)
        try:
            proc = run_uv(cmd, env=self._uv_env(), cwd=self.root, timeout=self.build_timeout,
                          abort=abort)
        except OSError as exc:
            if exc.errno in LIMIT_ERRNOS:
                raise limit_error(exc, f"running `uv {args[0]}` to build the bundle's "
                                       "environment") from exc
            raise EnvironmentBuildError(
                f"cannot run uv ({cmd[0]}): {exc}. uv comes with modelops-runtime: reinstall "
                "it in the worker image.", requirements=list(requirements),
                uv_output="") from exc
        except subprocess.TimeoutExpired as exc:
            # transient but not retried here (it already took build_timeout); not remembered
            raise EnvironmentBuildError(
                f"building the bundle's environment timed out after {self.build_timeout:.0f}s "
                f"(uv {args[0]}); check that the package index configured with UV_* variables "
                "is reachable. A transient failure: not tried again at once, not remembered "
                "(the next task builds again)", requirements=list(requirements), uv_output="",
                transient=None, timed_out=True) from exc
        if abort is not None and abort.aborted:
            raise stopped(requirements)
        if proc.returncode != 0:
            raise uv_failed(args, proc, requirements)

    # -- locking and leftovers ------------------------------------------------------

    def _locked(self, key: str):
        """One builder per key, across threads, processes and pods sharing the cache."""
        return file_lock(self.root / ".locks" / f"{key}.lock")

    def _remove_stale_builds(self, key: str) -> None:
        # we hold the key's lock (flock, also across pods on a shared volume): any temporary
        # build of this key, whichever host named it, is from a dead builder
        for tmp in self.root.glob(f"{_TMP_PREFIX}{key}-*"):
            log.warning("removing %s, a venv build that did not finish", tmp.name)
            remove_tree(tmp)
        for trash in self.root.glob(f"{_TRASH_PREFIX}{key}-*"):
            remove_tree(trash)

    def _remove_dead_leftovers(self) -> None:
        """Fresh venvs and temporary builds left by dead worker processes of this host
        (unlocked, at start: another host's are left alone, see the module docstring), and
        pristine venvs no worker process holds."""
        self.pristines.sweep()
        for entry in self.root.iterdir():
            if entry.name.startswith(_FRESH_PREFIX):
                tagged = entry.name[len(_FRESH_PREFIX):]
            elif entry.name.startswith(_TMP_PREFIX):
                tagged = entry.name[len(_TMP_PREFIX):].partition("-")[2]  # after the key
            else:
                continue
            if left_by_dead_local_process(tagged):
                log.info("removing %s, left by a worker process of this host that is gone",
                         entry.name)
                remove_tree(entry)

