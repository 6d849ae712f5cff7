"""The exit watch (worker/warm/exits.py) with real processes and their pidfds: exits are
handed on as they happen, output is drained meanwhile, a process still alive at its
deadline goes to the late path; and through the pool, a retired task process that does
not end by itself is ended by signals as before."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest

from modelops_runtime.models import Call
from support.bundles import make_bundle
from support.cluster import wait_for
from modelops_runtime.worker.warm.exits import ExitWatch

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open")


class _Proc:
    def __init__(self, code: str, output: bool = False) -> None:
        self.popen = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE if output else None)
        self.pidfd = os.pidfd_open(self.popen.pid)
        self.read: list[bytes] = []
        if output:
            os.set_blocking(self.popen.stdout.fileno(), False)

    def drain(self) -> bool:  # as the pool's: False at the output's end (fd closed)
        while True:
            try:
                chunk = os.read(self.popen.stdout.fileno(), 65536)
            except BlockingIOError:
                return True
            if not chunk:
                self.popen.stdout.close()
                return False
            self.read.append(chunk)

    def end(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)
        os.close(self.pidfd)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def made():
    procs: list[_Proc] = []
    yield lambda *a, **k: procs.append(_Proc(*a, **k)) or procs[-1]
    for proc in procs:
        proc.end()


def _watch(wait: float, linger: float = 0.05):
    exited, late = queue.Queue(), queue.Queue()
    return (ExitWatch(wait, on_exit=lambda item: exited.put((item, threading.current_thread())),
                      on_late=late.put, linger=linger), exited, late)


def _got(q: queue.Queue, timeout: float = 60):
    return q.get(timeout=timeout)[0]


def test_exits_are_handed_on_and_a_lingering_process_goes_late(made):
    watch, exited, late = _watch(wait=2.0)
    quick = made("import sys; sys.stdin.read()")  # ends at EOF on stdin
    lingering = made("import time; time.sleep(600)")
    assert watch.watch(quick.pidfd, "quick") and watch.watch(lingering.pidfd, "lingering")
    quick.popen.stdin.close()
    assert _got(exited) == "quick" and quick.popen.wait(30) == 0
    assert late.get(timeout=60) == "lingering"  # its deadline came: the late path's
    assert lingering.popen.poll() is None and exited.empty()
    watch.close()


def test_output_is_drained_until_the_process_exits(made):
    """A process writing more than its pipe holds exits only because the watch drains it;
    the drain's end (the fd closed) leaves the epoll, and its exit is still seen."""
    watch, exited, late = _watch(wait=60.0)
    chatty = made("import sys; sys.stdout.write('x' * 300_000); sys.stdout.flush()",
                  output=True)
    assert watch.watch(chatty.pidfd, "chatty", (chatty.popen.stdout.fileno(), chatty.drain))
    assert _got(exited) == "chatty" and late.empty()
    if not chatty.popen.stdout.closed:  # what came after the last wakeup, if anything
        chatty.drain()
    assert sum(map(len, chatty.read)) == 300_000
    # the epoll holds nothing stale: a new process on the freed fd numbers is watched
    again = made("pass")
    assert watch.watch(again.pidfd, "again")
    assert _got(exited) == "again"
    watch.close()


def test_the_next_collect_finishes_an_exited_process_in_its_own_thread(made):
    """No thread wakes for a process that exits before the next collect (a task thread's,
    at its task's end): the collecting thread finishes it."""
    watch, exited, late = _watch(wait=60.0, linger=60.0)
    quick = made("pass")
    assert watch.watch(quick.pidfd, "quick")
    quick.popen.wait(30)  # exited (a zombie: its pidfd is readable)
    watch.collect()
    item, thread = exited.get_nowait()  # (collect returns after finishing it)
    assert item == "quick" and thread is threading.current_thread() and late.empty()
    watch.close()


def test_hurry_has_the_thread_finish_quiet_processes_as_they_exit(made):
    """Someone waits for a handed-over process (a slot, its venv's removal, shutdown): the
    thread finishes it as it exits, not after the linger."""
    watch, exited, late = _watch(wait=60.0, linger=60.0)
    quick = made("import sys; sys.stdin.read()")
    assert watch.watch(quick.pidfd, "quick")
    watch.hurry()
    quick.popen.stdin.close()
    item, thread = exited.get(timeout=30)  # (well before the 60 s linger)
    assert item == "quick" and thread is not threading.current_thread()
    watch.close()


def test_close_hands_what_is_left_to_the_late_path_and_takes_no_more(made):
    watch, exited, late = _watch(wait=60.0)
    lingering = made("import time; time.sleep(600)")
    assert watch.watch(lingering.pidfd, "lingering")
    watch.close()
    assert late.get(timeout=60) == "lingering"
    assert not watch.watch(made("pass").pidfd, "after")


def test_a_closed_watch_never_started_takes_nothing(made):
    watch, _, _ = _watch(wait=1.0)
    watch.close()
    assert not watch.watch(made("pass").pidfd, "after")


LINGER = '''
import atexit, os, signal, time
from pathlib import Path

def _linger(flag):
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

def lingers(params, seed):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    atexit.register(_linger, Path(params["flag"]))
    return {"pid": os.getpid()}
'''


@pytest.mark.parametrize("source", ["template", "exec"])
def test_a_retired_process_that_does_not_end_is_ended_by_signals(tmp_path, warm, procs,
                                                                 source):
    """A fresh task process (nothing but itself to end: the exit watch's) that lingers at
    exit and ignores TERM is killed after the grace; it is reaped and nothing is left."""
    ex = warm(max_process_reuse=1, fresh_process_from=source)
    ex.pool.stop_grace = 1.0
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"slow.py": LINGER, "requirements.txt": ""}, name="linger")
    result = ex.run(Call(bundle=ref, entrypoint="slow:lingers",
                         args=({"flag": str(tmp_path / "never")}, 0)))
    pid = procs.track(result.pid)
    wait_for(lambda: result.pid not in ex.warm_pids(), 60,
             "the lingering process to be killed and reaped")
    assert not procs.alive(pid)
    assert ex.stats()["removals"]["reuse"] == 1
    # and the next task runs as usual
    assert ex.run(Call(bundle=ref, entrypoint="slow:lingers",
                       args=({"flag": str(tmp_path / "now")}, 1))).pid != result.pid
    (tmp_path / "now").touch()
