"""Regression tests of issue #10's bugs, with real warm processes, real venvs (uv, offline
wheels) and real signals; each failed on the code before the fix. The pool-policy halves
of bugs 1, 2, 3 and 8 are in test_pool_policy.py (stand-in handles, milliseconds)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest
from pydantic import ValidationError

from modelops_runtime.bundles import BundleStore
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.errors import (BundleError, EnvironmentBuildError, MemoryLimitExceeded,
                                     MissingDependencyError, ProcessCrashed, SimulationError,
                                     WorkerStopping)
from modelops_runtime.models import Call, SimResult, SimTask
from modelops_runtime.worker.warm.runner import program
from modelops_runtime.worker.warm.memory import tree_memory, tree_pids
from modelops_runtime.worker.warm.process import warm_env
from support.cluster import wait_for
from test_warm_pool import _bundle, _call

# the process ignores SIGTERM and, once told to exit, hangs in interpreter shutdown
# (a non-daemon thread that never ends) after touching params["marker"]
LINGER = '''
import os, signal, threading
from pathlib import Path

def _linger(marker):
    main = threading.main_thread()
    while main.is_alive():
        main.join(0.05)
    Path(marker).touch()
    threading.Event().wait()

def start(params, seed):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_linger, args=(params["marker"],)).start()
    return {"pid": os.getpid()}
'''

RUDE = '''
class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")

class ExitsOnPickle:
    def __reduce__(self):
        raise SystemExit("not today")

def bad_str(params, seed):
    raise Unprintable()

def exits_on_pickle(params, seed):
    return {"value": ExitsOnPickle()}

def takes(params, seed):
    return {"n": len(params["items"])}
'''

ESCAPES = '''
import os, subprocess, sys

def escape(params, seed):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True)
    return {"child": child.pid}

def segfault(params, seed):
    import ctypes
    ctypes.string_at(0)

def escape_then_segfault(params, seed):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True)
    with open(params["pid_file"], "w") as fh:
        fh.write(str(child.pid))
    segfault(params, seed)
'''

COW = '''
import os, time

def forks(params, seed):
    data = bytearray(params["mb"] << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1                     # every page resident, then shared copy-on-write
    pipes = []
    for _ in range(3):
        r, w = os.pipe()
        if os.fork() == 0:              # the child holds the pages until the parent is done
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        pipes.append(w)
    deadline = time.monotonic() + params["hold_s"]  # the workload: time to be sampled
    while time.monotonic() < deadline:
        time.sleep(0.01)
    for w in pipes:
        os.close(w)
    for _ in pipes:
        os.wait()
    return {"ok": True}

def spike(params, seed):
    return {"n": len(bytearray(params["mb"] << 20))}
'''


def _log_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("modelops-log-")}


# -- bug 1 ---------------------------------------------------------------------------------

def test_an_evicted_process_is_stopped_by_the_pool_and_reached_by_shutdown(tmp_path, warm,
                                                                            procs):
    ex = warm(max_warm_processes=1)
    ex.pool.stop_grace = 30.0  # the victim ignores TERM: only a KILL ends it sooner
    a = _bundle(tmp_path, "a", extra={"linger.py": LINGER})
    b = _bundle(tmp_path, "b", extra={"other.py": "X = 1\n"})
    marker = tmp_path / "exiting"
    victim = procs.track(ex.run(Call(bundle=a, entrypoint="linger:start",
                                     args=({"marker": str(marker)}, 0))).pid)
    results = {}

    def task_b():
        try:
            results["b"] = ex.run(_call(b))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results["b"] = exc

    thread = threading.Thread(target=task_b)
    thread.start()
    wait_for(marker.exists, 60, "the evicted process to begin exiting")
    assert victim.pid in ex.warm_pids(), "the process being evicted is in no set"
    ex.shutdown()
    assert not procs.alive(victim), "shutdown returned with the evicted process alive"
    thread.join(60)
    assert isinstance(results["b"], WorkerStopping), repr(results["b"])


# -- bug 3 ---------------------------------------------------------------------------------

def test_a_venv_that_cannot_be_built_evicts_nothing_and_runs_uv_once(tmp_path, warm, caplog):
    ex = warm(max_warm_processes=1)
    good = _bundle(tmp_path, "good")
    bad = _bundle(tmp_path, "bad", requirements="nosuchpkg==1.0\n")
    pid = ex.run(_call(good)).pid
    with caplog.at_level(logging.INFO, logger="modelops_runtime.venvs"):
        for _ in range(3):
            with pytest.raises(EnvironmentBuildError, match="nosuchpkg"):
                ex.run(_call(bad))
    builds = [r for r in caplog.records if r.getMessage().startswith("building venv")]
    assert len(builds) == 1, [r.getMessage() for r in builds]
    assert ex.stats()["removals"]["lru"] == 0
    again = ex.run(_call(good))  # the good bundle's process is still warm
    assert again.pid == pid and again.outputs["count"] == 2


# -- bug 4 ---------------------------------------------------------------------------------

def test_user_side_failures_are_typed_and_keep_the_process_warm(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path, extra={"rude.py": RUDE})
    pid = ex.run(_call(ref)).pid
    with pytest.raises(SimulationError, match="Unprintable") as err:
        ex.run(Call(bundle=ref, entrypoint="rude:bad_str", args=({}, 0)))
    assert "no str for you" in str(err.value)
    with pytest.raises(SimulationError, match="cannot travel back"):
        ex.run(Call(bundle=ref, entrypoint="rude:exits_on_pickle", args=({}, 0)))
    result = SimResult(outputs={}, executor="x", pid=1, process_task_count=1,
                       venv_cache_hit=None, duration_s=0.0)  # a class the venv lacks
    with pytest.raises(MissingDependencyError, match="modelops_runtime") as err:
        ex.run(Call(bundle=ref, entrypoint="rude:takes", args=({"items": [result]}, 0)))
    assert "arguments" in str(err.value)
    after = ex.run(_call(ref))
    assert after.pid == pid and after.outputs["count"] == 2
    stats = ex.stats()
    assert stats["spawns"] == 1 and sum(stats["removals"].values()) == 0, stats


# -- bug 5 ---------------------------------------------------------------------------------

def _escape(ref):
    return Call(bundle=ref, entrypoint="escapes:escape", args=({}, 0))


def test_a_descendant_in_its_own_session_dies_with_a_crashed_process(tmp_path, warm, procs):
    """It runs while its task crashes the process (a descendant a task leaves behind when
    it returns ends with that task: test_task_tree.py)."""
    ex = warm()
    ref = _bundle(tmp_path, extra={"escapes.py": ESCAPES})
    before = _log_threads()
    pid_file = tmp_path / "escaped.pid"  # the fixture's writable path
    with pytest.raises(ProcessCrashed, match="SIGSEGV"):
        ex.run(Call(bundle=ref, entrypoint="escapes:escape_then_segfault",
                    args=({"pid_file": str(pid_file)}, 0)))
    child = procs.track(int(pid_file.read_text()))
    procs.wait_gone([child], 30)
    wait_for(lambda: _log_threads() <= before, 30, "the crashed process's log thread to end")


def test_a_descendant_in_its_own_session_dies_with_a_retired_process(tmp_path, warm, procs):
    """Since issue #24 it ends with the task that started it, before the process retires."""
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path, extra={"escapes.py": ESCAPES})
    child = procs.track(ex.run(_escape(ref)).outputs["child"])
    procs.wait_gone([child], 30)
    wait_for(lambda: ex.warm_pids() == [], 60, "the retired process to be reaped")


def test_a_descendant_in_its_own_session_dies_at_shutdown(tmp_path, warm, procs):
    """Since issue #24 it ends with the task that started it, before any shutdown."""
    ex = warm()
    ref = _bundle(tmp_path, extra={"escapes.py": ESCAPES})
    child = procs.track(ex.run(_escape(ref)).outputs["child"])
    procs.wait_gone([child], 30)
    ex.shutdown()


# -- bug 6 ---------------------------------------------------------------------------------

_BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from modelops_runtime.worker.warm.venvs.store import VenvCache
    VenvCache(Path(sys.argv[1])).get(["tinylib==1.0"])
""")


def test_uv_dies_with_a_sigkilled_worker(tmp_path, procs):
    """A worker process SIGKILLed during a venv build: its uv must not go on (and write
    into a build directory the next builder removes). uv is held on a package index on
    127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held = []
    accepted = threading.Event()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    env.update({"UV_INDEX_URL": f"http://127.0.0.1:{port}/simple", "UV_HTTP_TIMEOUT": "600",
                "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_HTTP_RETRIES": "0"})
    builder = subprocess.Popen([sys.executable, "-c", _BUILD, str(tmp_path / "venvs")],
                               env=env, stdin=subprocess.DEVNULL)
    uv = None
    try:
        assert accepted.wait(120), "uv never reached the package index"
        worker = psutil.Process(builder.pid)
        (uv,) = [p for p in worker.children(recursive=True) if "uv" in p.name()]
        builder.send_signal(signal.SIGKILL)
        builder.wait(30)
        procs.wait_gone([uv], 30)
    finally:
        if builder.poll() is None:
            builder.kill()
            builder.wait(30)
        if uv is not None and procs.alive(uv):
            uv.kill()
        server.close()
        for conn in held:
            conn.close()


# -- bug 7 ---------------------------------------------------------------------------------

def test_copy_on_write_pages_of_forked_children_count_once(tmp_path, warm):
    """200 MiB touched, then 3 forked children sharing it: ~200 MiB, not ~800 MiB (RSS
    summed per process), so a 500 MiB limit does not kill it. The tree is measured while
    it holds the pages: what the sampler reads (PSS) counts them once, what RSS would
    count is over the limit -- so the pass is not for want of pages."""
    ex = warm(mem_limit_bytes="500Mi")
    ref = _bundle(tmp_path, extra={"cow.py": COW})
    out: list = []
    task = threading.Thread(target=lambda: out.append(ex.run(Call(
        bundle=ref, entrypoint="cow:forks", args=({"mb": 200, "hold_s": 8}, 0)))))
    task.start()
    try:
        tree = wait_for(lambda: next((t for p in ex.warm_pids()
                                      if len(t := tree_pids(p)) == 4), None), 120,
                        "the warm process and its 3 forked children")
        sampled = tree_memory(tree[0])          # what the pool's sampler reads: PSS
        rss = sum(psutil.Process(p).memory_info().rss for p in tree)
    finally:
        task.join(180)
    assert [r.outputs for r in out] == [{"ok": True}]
    assert 200 << 20 <= sampled < 350 << 20, f"sampled {sampled >> 20} MiB"
    assert rss > 500 << 20, f"RSS summed: {rss >> 20} MiB (the pages were not shared)"


def test_an_allocation_spike_past_the_hard_cap_fails_typed_at_once(tmp_path, warm, procs):
    """The runner's RLIMIT_DATA backstop: 1 GiB at once under a 100 MiB limit fails the
    task as MemoryLimitExceeded however fast it came; the process is replaced."""
    ex = warm(mem_limit_bytes="100Mi")
    ref = _bundle(tmp_path, extra={"cow.py": COW})
    first = procs.track(ex.run(_call(ref)).pid)
    with pytest.raises(MemoryLimitExceeded, match="hard cap") as err:
        ex.run(Call(bundle=ref, entrypoint="cow:spike", args=({"mb": 1024}, 0)))
    assert err.value.limit_bytes == 100 << 20
    procs.wait_gone([first], 30)
    assert ex.run(Call(bundle=ref, entrypoint="cow:spike", args=({"mb": 10}, 0))).outputs == {
        "n": 10 << 20}
    assert ex.stats()["removals"]["mem_limit"] == 1


# -- bug 8 ---------------------------------------------------------------------------------

def test_a_stopped_process_forgets_its_fds(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path)
    venv = ex.venvs.get([])
    proc = ex.pool.spawn(key="k", venv=venv, bundle_dir=ex.bundles.path(ref),
                         env=warm_env(venv))
    proc.stop(graceful=False)
    assert (proc._req, proc._resp, proc._lifeline, proc._pidfd) == (-1, -1, -1, None)


def test_a_venv_without_room_for_the_compiled_runner_warns_once(tmp_path, warm, caplog):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path)
    venv = ex.venvs.get([])  # the bundle's venv (no requirements)
    compiled = program.program_dir(venv.path)
    blocker = compiled / "main.pyc"
    venv.path.chmod(0o755)  # published venvs are read-only; the test's own files
    compiled.chmod(0o755)
    blocker.unlink(missing_ok=True)  # compiled at build: gone, and a directory in its
    blocker.mkdir()                  # place cannot be replaced by a file, even by root
    (blocker / "x").touch()
    with caplog.at_level(logging.WARNING):
        pids = {ex.run(_call(ref, seed=s)).pid for s in range(3)}
    assert len(pids) == 3  # three spawns
    warned = [r for r in caplog.records if "cannot compile the runner" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]


# -- bug 9 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("bundle", "sha256:" + "a" * 64 + "\n"), ("entrypoint", "model:ok\n")])
def test_a_trailing_newline_is_not_a_valid_reference(field, value):
    fields = {"bundle": "sha256:" + "a" * 64, "entrypoint": "model:ok", "seed": 0, field: value}
    with pytest.raises(ValidationError):
        SimTask(**fields)


def test_the_bundle_store_refuses_a_reference_with_a_trailing_newline(tmp_path):
    config = RuntimeConfig.from_env({"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
                                     "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "cache")})
    with pytest.raises(BundleError, match="is not of the form"):
        BundleStore(config).path("sha256:" + "a" * 64 + "\n")

