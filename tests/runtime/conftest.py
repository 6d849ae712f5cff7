"""Fixtures for the runtime tests."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable

import psutil
import pytest

from modelops_runtime.bundles import BundleStore
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.worker.executors.warm import IsolatedWarmExecEnv
from modelops_runtime.worker.warm.scratch import SCRATCH_PREFIX
from support.cluster import wait_for


class Processes:
    """Processes identified by pid *and* start time: a psutil.Process compares (and hashes)
    that way and ``is_running()`` checks that identity, so a pid reused by an unrelated
    process never counts as the one we watched."""

    @staticmethod
    def track(pid: int | psutil.Process) -> psutil.Process | None:
        """The process ``pid`` is now (None if it is already gone). Call it while the
        process surely exists, e.g. right after a task returned its pid."""
        if isinstance(pid, psutil.Process):
            return pid
        try:
            return psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None

    def alive(self, proc: int | psutil.Process | None) -> bool:
        """Still running (a zombie awaiting its parent's wait() counts as gone)."""
        proc = self.track(proc) if isinstance(proc, int) else proc
        if proc is None:
            return False
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def running(self, procs: Iterable[int | psutil.Process | None]) -> list[psutil.Process]:
        return [p for p in (self.track(p) if isinstance(p, int) else p for p in procs)
                if p is not None and self.alive(p)]

    def wait_gone(self, procs: Iterable[int | psutil.Process | None],
                  timeout: float = 60) -> None:
        """Fail unless every process exits within a bounded wait. Bare pids are pinned to
        their process when this is called: pass tracked processes to be exact."""
        procs = [p for p in (self.track(p) if isinstance(p, int) else p for p in procs)
                 if p is not None]
        wait_for(lambda: not self.running(procs), timeout,
                 f"processes {sorted(p.pid for p in procs)} to exit",
                 on_fail=lambda: f"still alive: {[p.pid for p in self.running(procs)]}")


@pytest.fixture
def procs() -> Processes:
    """``procs.track(pid)``, ``procs.alive(p)``, ``procs.running(ps)``, ``procs.wait_gone(ps)``."""
    return Processes()


@pytest.fixture
def wait_gone(procs):
    """``wait_gone(procs)``: fail unless every process exits within a bounded wait."""
    return procs.wait_gone


def parked_in(thread, function: str, module_file: str) -> bool:
    """True if ``thread`` is blocked in a ``threading`` wait called from ``function`` of
    ``module_file``: proves a thread waits, without a time window."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        caller = frame.f_back
        if (frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py")
                and caller is not None and caller.f_code.co_name == function
                and caller.f_code.co_filename == module_file):
            return True
        frame = caller
    return False


@pytest.fixture
def waits_in():
    """``waits_in(thread, function, module_file)``: see :func:`parked_in`."""
    return parked_in


# -- warm executors driven in this process (test_warm_pool.py, test_warm_regressions.py) --

@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """This process's TMPDIR for the test (where warm processes get their working dirs)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # gettempdir() caches its answer
    return root


@pytest.fixture
def warm(tmp_path, uv_offline, scratch_root, procs):
    """Factory: ``warm(**settings)`` → executor. Every executor is shut down at teardown;
    none of its warm processes and none of their working directories may survive."""
    made: list[IsolatedWarmExecEnv] = []

    def make(**settings):
        env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
               "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
               "MODELOPS_VENVS_DIR": str(tmp_path / "venvs"),
               # the models write their "started" marks here (warm processes are sandboxed)
               "MODELOPS_WARM_WRITABLE_PATHS": str(tmp_path)}
        env.update({f"MODELOPS_{k.upper()}": str(v) for k, v in settings.items()})
        config = RuntimeConfig.from_env(env)
        executor = IsolatedWarmExecEnv(config, BundleStore(config))
        made.append(executor)
        return executor

    yield make
    seen = []
    for executor in made:
        seen += [procs.track(pid) for pid in executor.warm_pids()]
        executor.shutdown()
    assert not procs.running(seen), "warm processes survived shutdown"
    assert not list(scratch_root.glob(f"{SCRATCH_PREFIX}*")), "working directories left"
