"""The warm pool's policy (worker/warm/pool.py) with stand-in process handles: which
process serves a task, when one goes, and that every process the pool owns is visible and
bounded. Milliseconds per test; the real processes are tested in test_warm_pool.py.

A stand-in handle is a small object with the handle's interface whose stop can be *held*:
a held stop blocks until the test lets it go or the process is killed, which opens the
windows where the pool's bookkeeping used to go wrong (issue #10, bugs 1, 2 and 8)."""

from __future__ import annotations

import itertools
import signal
import threading
import time

import pytest

from modelops_runtime.errors import WorkerStopping
from modelops_runtime.worker.counters import RemovalReason
from modelops_runtime.worker.warm import pool as pool_module
from modelops_runtime.worker.warm.pool import WarmPool
from support.cluster import wait_for

_pids = itertools.count(4_000_000)  # above pid_max: never a real process


class Fake:
    """A stand-in warm process. ``hold`` (an Event, set = not held) gates its stop."""

    def __init__(self, key, hold: threading.Event, live: list, *, max_tasks=1000, ttl=3600.0):
        self.pid = next(_pids)
        self.key = key
        self.max_tasks = max_tasks
        self.expires_at = time.monotonic() + ttl
        self.task_count = 0
        self.lost = None
        self.worker_stopping = False
        self.memory_exceeded = None
        self.healthy = True
        self.alive = True
        self.graceful = None      # how it was stopped
        self.stopping = threading.Event()  # its stop (or, in older pools, retirement) began
        self._hold = hold
        self._killed = threading.Event()
        self._live = live
        live.append(self)

    # the handle's interface ---------------------------------------------------------
    def health(self, timeout):
        if not self.alive:
            return RemovalReason.crash
        return None if self.healthy else RemovalReason.unhealthy

    def exited(self):
        return not self.alive

    def _held(self):
        self.stopping.set()
        while not (self._hold.wait(0.01) or self._killed.is_set()):
            pass

    def close_requests(self):  # the graceful stop's first step (older pools call it apart)
        self._held()
        return time.monotonic()

    def stop(self, *, graceful=True, grace=5.0):
        self._held()
        self.graceful = graceful
        self._end()
        return "exited with code 0"

    def signal_group(self, sig):  # TERM and KILL both end it
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self._killed.set()
            self._end()

    def kill(self):
        self.signal_group(signal.SIGKILL)

    def wait_exit(self, timeout):
        return self._killed.wait(timeout) or not self.alive

    _wait_exit = wait_exit

    def remove_scratch(self):
        pass

    def _end(self):
        if self.alive:
            self.alive = False
            self._live.remove(self)


class FakeSampler:
    """Memory per process as the test sets it."""

    def __init__(self):
        self.memory: dict = {}

    measured = 0  # calls

    def measure(self, procs):
        self.measured += 1
        return {p: self.memory.get(p.pid, 0) for p in procs}

    def close(self):
        pass


@pytest.fixture
def make_pool():
    pools = []

    def make(**kw):
        kw.setdefault("max_processes", 2)
        kw.setdefault("max_reuse", 1000)
        kw.setdefault("ttl", 3600)
        kw.setdefault("housekeeping_period", 3600)  # the test calls housekeep() itself
        kw.setdefault("stop_grace", 1.0)
        pool = WarmPool(**kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(10)


class World:
    """Fakes made by the pool's spawns, and the largest number alive at any spawn."""

    def __init__(self, pool):
        self.pool = pool
        self.hold = threading.Event()
        self.hold.set()
        self.live: list[Fake] = []
        self.made: list[Fake] = []
        self.max_live = 0

    def spawner(self, key, **kw):
        def spawn():
            self.max_live = max(self.max_live, len(self.live) + 1)
            fake = Fake(key, self.hold, self.live, **kw)
            self.made.append(fake)
            return fake
        return spawn

    def run_task(self, key, **kw):
        proc, reused = self.pool.acquire(key, self.spawner(key, **kw))
        proc.task_count += 1
        self.pool.release(proc)
        return proc, reused


def _waiting(waits_in, thread) -> bool:
    return waits_in(thread, "acquire", pool_module.__file__)


def _in_thread(fn, results, name):
    def target():
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[name] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# -- basics -----------------------------------------------------------------------------

def test_reuse_lru_and_limits(make_pool):
    pool = make_pool(max_processes=2)
    w = World(pool)
    a, reused = w.run_task("a")
    assert not reused
    assert w.run_task("a") == (a, True)
    b, _ = w.run_task("b")
    c, _ = w.run_task("c")  # full: a (least recently used) is evicted
    wait_for(lambda: not a.alive, 10, "the evicted process to be stopped")
    assert a.graceful is True and b.alive and c.alive
    assert pool.stats.snapshot().removals.lru == 1
    assert sorted(pool.pids()) == sorted([b.pid, c.pid]) and w.max_live <= 2


def test_reuse_limit_and_ttl_retire_through_the_reaper(make_pool):
    pool = make_pool()
    w = World(pool)
    first, _ = w.run_task("a", max_tasks=1)
    second, reused = w.run_task("a", max_tasks=1)
    assert not reused and second is not first
    old, _ = w.run_task("b", ttl=0.0)  # expired as soon as it is idle
    pool.housekeep()
    wait_for(lambda: not first.alive and not old.alive, 10, "the retired processes to go")
    removals = pool.stats.snapshot().removals
    assert removals.reuse == 2 and removals.ttl == 1  # second retired too (max_tasks=1)


def test_memory_budget_evicts_idle_lru(make_pool):
    sampler = FakeSampler()
    pool = make_pool(max_processes=3, memory_budget=250, sampler=sampler)
    w = World(pool)
    a, _ = w.run_task("a")
    b, _ = w.run_task("b")
    c, _ = w.run_task("c")
    sampler.memory = {a.pid: 100, b.pid: 100, c.pid: 100}
    pool.housekeep()
    wait_for(lambda: not a.alive, 10, "the least recently used process to be evicted")
    assert b.alive and c.alive and pool.stats.snapshot().removals.memory_budget == 1


def test_the_budget_reads_no_memory_while_nothing_could_be_evicted(make_pool):
    """Every process busy (or unpooled: fresh processes, templates): the housekeeper
    reads no tree's PSS (a walk of its page tables), as it could evict nothing anyway."""
    sampler = FakeSampler()
    pool = make_pool(max_processes=3, memory_budget=250, sampler=sampler)
    w = World(pool)
    busy, _ = pool.acquire("a", w.spawner("a"))
    sampler.memory = {busy.pid: 1000}
    pool.housekeep()
    assert sampler.measured == 0 and busy.alive
    pool.release(busy)  # idle now: measured, and evicted over the budget
    pool.housekeep()
    assert sampler.measured == 1
    wait_for(lambda: not busy.alive, 10, "the idle process over the budget to be evicted")


def test_a_dead_idle_process_is_replaced(make_pool):
    pool = make_pool()
    w = World(pool)
    a, _ = w.run_task("a")
    a.alive = False  # died while idle (e.g. killed from outside)
    w.live.remove(a)
    b, reused = w.run_task("a")
    assert b is not a and not reused
    assert pool.stats.snapshot().removals.crash == 1


# -- issue #10 bug 1: an eviction is visible, bounded by shutdown, and off the task thread --

def test_an_evicted_process_stays_visible_and_shutdown_stops_it(make_pool):
    pool = make_pool(max_processes=1)
    w = World(pool)
    victim, _ = w.run_task("a")
    w.hold.clear()  # the victim's stop hangs (e.g. it ignores SIGTERM)
    results = {}
    task = _in_thread(lambda: pool.acquire("b", w.spawner("b")), results, "b")
    assert victim.stopping.wait(10), "the eviction did not start"
    # while it is being stopped it is still the pool's: listed, and reached by shutdown
    assert victim.pid in pool.pids()
    pool.shutdown(10)
    assert not victim.alive, "shutdown returned with the evicted process alive"
    task.join(10)
    assert isinstance(results.get("b"), WorkerStopping), repr(results.get("b"))
    assert pool.pids() == [] and w.live == []


# -- issue #10 bug 2: MAX_WARM_PROCESSES holds while a process retires or fails its check --

def _b_within_the_limit(pool, w, results, waits_in):
    """Task "b" asks for the only slot while it is being freed: it spawns or waits, never
    beside a live process; then the held stop goes on. Returns b's thread."""
    thread = _in_thread(lambda: pool.acquire("b", w.spawner("b")), results, "b")
    wait_for(lambda: "b" in results or _waiting(waits_in, thread), 10,
             "the second task to spawn or to wait for a slot")
    assert w.max_live <= 1, "two live processes with MAX_WARM_PROCESSES=1"
    w.hold.set()
    return thread


def test_the_limit_holds_while_a_process_retires(make_pool, waits_in):
    pool = make_pool(max_processes=1)
    w = World(pool)
    proc, _ = pool.acquire("a", w.spawner("a", max_tasks=1))
    proc.task_count = 1
    w.hold.clear()  # its retirement hangs
    results = {}
    releaser = _in_thread(lambda: pool.release(proc), results, "release")
    assert proc.stopping.wait(10), "the retirement did not start"
    other = _b_within_the_limit(pool, w, results, waits_in)
    releaser.join(10)
    other.join(10)
    assert w.max_live <= 1 and results["b"][0].key == "b"
    pool.release(results["b"][0])


def test_the_limit_holds_while_a_failed_health_check_is_handled(make_pool, waits_in):
    pool = make_pool(max_processes=1)
    w = World(pool)
    sick, _ = w.run_task("a")
    sick.healthy = False
    w.hold.clear()
    results = {}
    first = _in_thread(lambda: pool.acquire("a", w.spawner("a")), results, "a")
    assert sick.stopping.wait(10), "the unhealthy process was not stopped"
    second = _b_within_the_limit(pool, w, results, waits_in)
    done: set[str] = set()
    for _ in range(2):  # whichever gets the slot first runs its task, then the other
        wait_for(lambda: set(results) - done, 10, "a task to get the slot")
        name = sorted(set(results) - done)[0]
        pool.release(results[name][0])
        done.add(name)
    first.join(10)
    second.join(10)
    assert w.max_live <= 1
    assert pool.stats.snapshot().removals.unhealthy == 1


# -- issue #10 bug 8: a shutdown during a health check is a shutdown ----------------------

def test_a_shutdown_during_a_health_check_counts_as_shutdown(make_pool):
    pool = make_pool()
    w = World(pool)
    proc, _ = w.run_task("a")
    checking, release_check = threading.Event(), threading.Event()

    def health(timeout):
        checking.set()
        release_check.wait(10)
        return RemovalReason.crash if not proc.alive else None

    proc.health = health
    results = {}
    task = _in_thread(lambda: pool.acquire("a", w.spawner("a")), results, "a")
    assert checking.wait(10)
    stopper = threading.Thread(target=pool.shutdown, args=(10,))
    stopper.start()
    wait_for(lambda: not proc.alive, 10, "the shutdown to kill the checked process")
    release_check.set()
    task.join(10)
    stopper.join(10)
    assert isinstance(results["a"], WorkerStopping), repr(results["a"])
    removals = pool.stats.snapshot().removals
    assert removals.shutdown == 1 and removals.unhealthy == 0 and removals.crash == 0, removals


def test_a_failed_prepare_evicts_nothing(make_pool):
    """Issue #10 bug 3 at the policy level: the venv is got before a slot is taken."""
    pool = make_pool(max_processes=1)
    w = World(pool)
    good, _ = w.run_task("good")

    def prepare():
        raise RuntimeError("uv failed")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="uv failed"):
            pool.acquire("bad", w.spawner("bad"), prepare=prepare)
    assert good.alive and pool.pids() == [good.pid]
    assert pool.stats.snapshot().removals.lru == 0
