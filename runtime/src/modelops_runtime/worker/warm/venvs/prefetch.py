"""Fresh venvs built ahead (FORCE_FRESH_VENV): while tasks run, the next few venvs of a
dependency set are built in the background, so a task waits for its venv only when builds
are slower than tasks; used ones are removed in the background.

Every venv is still new and used by one task only (made by the store's own
:meth:`~.venvs.VenvCache.fresh`: a clone of the set's pristine uv build, see clones.py;
removed with :meth:`~.venvs.VenvCache.remove`); at most
``ahead`` of them wait per dependency set.

- **Budget**: venvs built ahead count against the store's budget (``max_bytes``,
  worker.cache.venvsBudget). None is built ahead while the store's size plus one more venv
  of the set (measured on its first build) per build not yet finished would exceed it; the
  task's own venv is still built when it starts. Sizes here count each venv alone, its
  hard links into uv's cache included (garbage collection counts a shared file once): an
  overestimate, so building ahead stops early rather than late.
- **Stop** (first in the worker's shutdown) is bounded: builds not started are cancelled,
  the uv of running ones is killed with its process group and their directories removed,
  finished ones no task took are removed; it waits for none to complete. **Close** then
  waits for the removals of used venvs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ....bundles import remove_tree
from ....bundles.cache import tree_bytes
from .uv import UvAbort, stopped
from .store import FINGERPRINT, Venv, VenvCache

log = logging.getLogger("modelops_runtime.venvs")

# s close() gives killed builds to end (uv is dead: only their directory's removal is left)
# before it removes the directories of those still running itself (the nanny gives a
# closing worker process about 5 s)
CLOSE_WAIT = 3.0


@dataclass
class _Ahead:
    abort: UvAbort
    future: Future = field(default_factory=Future)


class FreshVenvs:
    """Hands out single-use venvs, building up to ``ahead`` per dependency set ahead."""

    def __init__(self, venvs: VenvCache, ahead: int) -> None:
        self.venvs = venvs
        self.ahead = ahead
        self._lock = threading.Condition()
        self._ready: dict[tuple[str, ...], deque[_Ahead]] = {}
        self._building: set[UvAbort] = set()  # every build in flight, ahead or a task's own
        self._own: dict[tuple[str, ...], int] = {}  # tasks building their own venv now
        self._sizes: dict[tuple[str, ...], int] = {}  # bytes of one venv of the set
        self._entry_bytes: dict[str, int] = {}  # finished entries of the store → bytes
        self._over_budget = self._warned = False
        self._closed = False
        self._builder = ThreadPoolExecutor(max(1, ahead), thread_name_prefix="modelops-venv-ahead")
        self._remover = ThreadPoolExecutor(1, thread_name_prefix="modelops-venv-remove")

    def take(self, requirements: Sequence[str]) -> Venv:
        """A venv no task has used: one built ahead if there is one (waiting for it if it
        is still being built), else built now. The next ones are started behind it."""
        key = tuple(requirements)
        with self._lock:
            if self._closed:
                raise stopped(requirements)
            queue = self._ready.setdefault(key, deque())
            ahead = queue.popleft() if queue else None
        if ahead is None:  # built now, the next ones behind it (and again once it is measured)
            with self._lock:
                self._own[key] = self._own.get(key, 0) + 1
            try:
                self._top_up(key)
                venv = self._build(key, UvAbort())
            finally:
                with self._lock:
                    self._own[key] -= 1
            self._top_up(key)
            return venv
        self._top_up(key)
        try:  # a failed build fails this task, as building it now would
            return ahead.future.result()
        except CancelledError:  # close() cancelled it before it started
            raise stopped(requirements) from None

    def pristine(self, requirements: Sequence[str]) -> Venv:
        """The set's pristine venv itself (task processes forked from a template run in
        it): built once per worker process, its uv killed by :meth:`stop`."""
        abort = UvAbort()
        with self._lock:
            if self._closed:
                raise stopped(requirements)
            self._building.add(abort)
        try:
            return self.venvs.pristine(requirements, abort=abort)
        finally:
            with self._lock:
                self._building.discard(abort)
                self._lock.notify_all()

    def _build(self, key: tuple[str, ...], abort: UvAbort) -> Venv:
        with self._lock:
            if self._closed:
                raise stopped(list(key))
            self._building.add(abort)
        try:
            venv = self.venvs.fresh(list(key), abort=abort)
        finally:
            with self._lock:
                self._building.discard(abort)
                self._lock.notify_all()
        if key not in self._sizes and self.venvs.max_bytes is not None:
            self._sizes[key] = tree_bytes(venv.path, set())
        return venv

    def ahead_of(self, requirements: Sequence[str]) -> int:
        """Venvs of this dependency set built or being built ahead now."""
        with self._lock:
            return len(self._ready.get(tuple(requirements), ()))

    def _top_up(self, key: tuple[str, ...]) -> None:
        """Start builds ahead up to ``ahead`` while the budget has room for each (builds
        not finished, ahead or a task's own, counted at one venv's size each)."""
        used: int | None = None
        while True:
            with self._lock:
                queue = self._ready.get(key)
                if self._closed or queue is None or len(queue) >= self.ahead:
                    return
                pending = self._own.get(key, 0) + sum(not a.future.done() for a in queue)
                none_ahead = not queue
            budget, size = self.venvs.max_bytes, self._sizes.get(key)
            if budget is not None:
                if size is None:  # known once the set's first venv was built
                    return
                used = self._store_bytes() if used is None else used
                fits = used + size * (pending + 1) <= budget
                if none_ahead or fits:
                    self._budget_state(fits, used, size, budget)
                if not fits:
                    return
            ahead = _Ahead(UvAbort())
            with self._lock:
                if self._closed or len(queue) >= self.ahead:
                    return
                try:
                    ahead.future = self._builder.submit(self._build, key, ahead.abort)
                except RuntimeError:  # shut down meanwhile
                    return
                queue.append(ahead)

    def _budget_state(self, fits: bool, used: int, size: int, budget: int) -> None:
        """Log when building ahead stops for the budget (a warning the first time) or
        starts again."""
        if fits != self._over_budget:
            return
        self._over_budget = not fits
        if fits:
            log.debug("venvs are built ahead again: the venv store (%s) has room for another "
                      "venv (%s) within worker.cache.venvsBudget (%s)",
                      _mib(used), _mib(size), _mib(budget))
            return
        log.log(logging.DEBUG if self._warned else logging.WARNING,
                "no venv is built ahead: the venv store (%s) plus another venv (%s) would "
                "exceed worker.cache.venvsBudget (%s, MODELOPS_VENVS_MAX_BYTES); each task's "
                "venv is built when it starts. Raise the budget or lower "
                "worker.executor.freshVenvsAhead", _mib(used), _mib(size), _mib(budget))
        self._warned = True

    def _store_bytes(self) -> int:
        """Bytes of the store's entries, each measured alone (as a venv's expected size is).
        A finished venv never changes (read-only, its fingerprint written last): it is
        walked once; builds in progress and other entries are walked every time."""
        root, known = self.venvs.root, self._entry_bytes
        try:
            names = [n for n in os.listdir(root) if n != ".locks"]
        except OSError:
            return 0
        sizes: dict[str, int] = {}
        total = 0
        for name in names:
            size = known.get(name)
            if size is None:
                if os.path.islink(root / name):  # a published key: links a generation
                    continue
                finished = (root / name / FINGERPRINT).exists()  # looked at before the walk
                size = tree_bytes(root / name, set())
                if not finished:
                    total += size
                    continue
            sizes[name] = size
            total += size
        self._entry_bytes = sizes
        return total

    def discard(self, venv: Venv, after: Callable[[], object] = lambda: None) -> None:
        """Remove a used venv in the background, once ``after`` returned (e.g. its process
        is gone)."""
        def remove() -> None:
            try:
                after()
            finally:
                self.venvs.remove(venv)
        try:
            self._remover.submit(remove)
        except RuntimeError:
            remove()

    def stop(self) -> None:
        """Stop building, without waiting for a build to complete (idempotent): builds not
        started are cancelled, running ones killed (their uv and its process group) and
        their directories removed, and venvs built ahead that no task took are removed.
        Tasks taking a venv from now on get WorkerStopping."""
        with self._lock:
            self._closed = True
            queues, self._ready = list(self._ready.values()), {}
            building = list(self._building)
        self._builder.shutdown(wait=False, cancel_futures=True)
        for abort in building:
            abort.abort()
        # killed builds end at once (their uv is dead) and remove their own directory
        deadline = time.monotonic() + CLOSE_WAIT
        with self._lock:
            while self._building and time.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            stuck = list(self._building)
        for abort in stuck:
            log.warning("a venv build did not end %.0fs after it was stopped; removing %s",
                        CLOSE_WAIT, abort.path)
            if abort.path is not None:
                remove_tree(abort.path)
        # a build that ended just before its abort hands its venv to its future
        futures = [ahead.future for queue in queues for ahead in queue]
        wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.venvs.remove(future.result())

    def close(self) -> None:
        """:meth:`stop`, then wait for the removals of used venvs (call it once their
        processes are stopped), then remove the pristine venvs they were cloned from."""
        self.stop()
        self._remover.shutdown(wait=True)
        self.venvs.pristines.close()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


__all__ = ["FreshVenvs"]
