"""Fresh venvs built ahead (FORCE_FRESH_VENV): while tasks run, the next few venvs of a
dependency set are built in the background, so a task waits for its venv only when builds
are slower than tasks; used ones are removed in the background.

Every venv is still new and used by one task only (built by the store's own
:meth:`~.venvs.VenvCache.fresh`, removed with :meth:`~.venvs.VenvCache.remove`); at most
``ahead`` of them wait per dependency set, and the worker's shutdown removes the ones no
task took.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .venvs import Venv, VenvCache

log = logging.getLogger("modelops_runtime.venvs")


class FreshVenvs:
    """Hands out single-use venvs, building up to ``ahead`` per dependency set ahead."""

    def __init__(self, venvs: VenvCache, ahead: int) -> None:
        self.venvs = venvs
        self.ahead = ahead
        self._lock = threading.Lock()
        self._ready: dict[tuple[str, ...], deque[Future]] = {}
        self._closed = False
        self._builder = ThreadPoolExecutor(max(1, ahead), thread_name_prefix="modelops-venv-ahead")
        self._remover = ThreadPoolExecutor(1, thread_name_prefix="modelops-venv-remove")

    def take(self, requirements: Sequence[str]) -> Venv:
        """A venv no task has used: one built ahead if there is one (waiting for it if it
        is still being built), else built now. The next ones are started behind it."""
        key = tuple(requirements)
        with self._lock:
            queue = self._ready.setdefault(key, deque())
            future = queue.popleft() if queue else None
            self._top_up(key, queue)
        if future is None:
            return self.venvs.fresh(requirements)
        return future.result()  # a failed build fails this task, as building it now would

    def _top_up(self, key: tuple[str, ...], queue: deque) -> None:
        while not self._closed and len(queue) < self.ahead:
            try:
                queue.append(self._builder.submit(self.venvs.fresh, list(key)))
            except RuntimeError:  # shut down meanwhile
                return

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

    def close(self) -> None:
        """Remove every venv built ahead and not taken; wait for the removals."""
        with self._lock:
            self._closed = True
            queues, self._ready = list(self._ready.values()), {}
        self._builder.shutdown(wait=True, cancel_futures=True)
        for queue in queues:
            for future in queue:
                if future.cancelled() or future.exception() is not None:
                    continue
                self.venvs.remove(future.result())
        self._remover.shutdown(wait=True)


__all__ = ["FreshVenvs"]
