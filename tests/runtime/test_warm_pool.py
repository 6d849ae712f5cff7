"""IsolatedWarmExecEnv driven directly in this process: real BundleStore, real uv venvs,
real warm processes and real signals (no Dask here; the cluster tests are
test_warm_cluster.py). Covers the pool policies and bad inputs that are slow or awkward
to reach through a scheduler."""

from __future__ import annotations

import array
import collections
import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from modelops_runtime.bundles import BundleStore
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.errors import (EntrypointError, EnvironmentBuildError,
                                     MissingDependencyError, ModelOpsError, ProcessCrashed,
                                     SimulationError)
from modelops_runtime.executors.warm import IsolatedWarmExecEnv
from modelops_runtime.models import Call
from modelops_runtime.pool import RUNNER, jittered_reuse, jittered_ttl
from modelops_runtime.venvs import FINGERPRINT, venv_key
from support.bundles import make_bundle
from support.cluster import wait_for
from support.wheels import offline_uv_env, wheelhouse  # noqa: F401 - fixture

MODEL = '''
import os, sys, time
from pathlib import Path

COUNT = 0
BALLAST = []

def sim(params, seed):
    global COUNT
    COUNT += 1
    return {"seed": seed, "count": COUNT, "pid": os.getpid()}

def env(params, seed):
    return {"env": dict(os.environ), "path0": sys.path[0], "cwd": os.getcwd()}

def hold(params, seed):
    BALLAST.append(b"m" * (params["mb"] << 20))  # kept while the process is idle
    return {"pid": os.getpid()}

def wait_for_flag(params, seed):
    flag = Path(params["flag"])
    Path(params["started"]).touch()
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid()}

def boom(params, seed):
    raise ValueError(f"bad parameter x={params.get('x')}")

def unpicklable(params, seed):
    return {"f": lambda: 1}

def imports_tinylib(params, seed):
    import tinylib
    return {"version": tinylib.VERSION}

def echo(params, seed):
    import hashlib
    print("o" * (1 << 20))                   # 1 MB on stdout
    print("e" * (1 << 20), file=sys.stderr)  # and on stderr: pipes must never fill up
    data = params["data"].encode()
    return {"sha": hashlib.sha256(data).hexdigest(), "back": data}

def fail_loud(params, seed):
    print("last words of the model")
    raise RuntimeError("failed loudly")

def imports_runtime(params, seed):
    import modelops_runtime
    return {}

def death_signal(params, seed):
    import ctypes
    sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return {"signal": sig.value}

def kinds(params, seed):
    import array, collections
    return {"bytearray": bytearray(b"ab"), "array": array.array("d", [1.5]),
            "ordered": collections.OrderedDict(a=1), "big": list(range(5000)),
            "plain": {"t": (1, 2.5, None, True, b"x", "s"), "l": [-0.0]}, "echo": params}

def view(params, seed):
    return {"view": memoryview(b"ab")}
'''

# a runner that imports this (and nothing else) shows what the runner itself loads
LEAN = '''
import sys

def loaded(params, seed):
    return {"modules": sorted(sys.modules)}
'''

# leaves a child behind and exits slowly: at exit it waits for params["flag"]
SLOW_EXIT = '''
import atexit, os, signal, subprocess, sys, time
from pathlib import Path

def _linger(flag):
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

def lingers(params, seed):
    if params.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    atexit.register(_linger, Path(params["flag"]))
    return {"child": child.pid}
'''


@pytest.fixture
def uv_offline(monkeypatch, wheelhouse):  # noqa: F811 - fixture
    for key, value in offline_uv_env(wheelhouse).items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def warm(tmp_path, uv_offline):
    """Factory: ``warm(**settings)`` → (executor, repo). Every executor is shut down at
    teardown and none of its warm processes may survive."""
    made: list[IsolatedWarmExecEnv] = []

    def make(**settings):
        env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
               "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
               "MODELOPS_VENVS_DIR": str(tmp_path / "venvs")}
        env.update({f"MODELOPS_{k.upper()}": str(v) for k, v in settings.items()})
        config = RuntimeConfig.from_env(env)
        executor = IsolatedWarmExecEnv(config, BundleStore(config))
        made.append(executor)
        return executor

    yield make
    seen = set()
    for executor in made:
        seen |= set(executor.warm_pids())
        executor.shutdown()
    assert not [p for p in seen if _alive(p)], "warm processes survived shutdown"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _bundle(tmp_path, name="b", requirements="", extra: dict | None = None) -> str:
    files = {"model.py": MODEL, "requirements.txt": requirements, **(extra or {})}
    return make_bundle(tmp_path / "src", tmp_path / "repo", files, name=name)


def _call(ref, fn="sim", seed=0, **params):
    return Call(bundle=ref, entrypoint=f"model:{fn}", args=(params, seed))


def test_module_state_reused_and_errors_keep_process_warm(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path)
    results = [ex.run(_call(ref, seed=s)) for s in range(5)]
    assert [r.outputs["count"] for r in results] == [1, 2, 3, 4, 5]
    assert len({r.pid for r in results}) == 1
    assert [r.process_task_count for r in results] == [1, 2, 3, 4, 5]
    assert [r.venv_cache_hit for r in results] == [False, True, True, True, True]
    assert results[0].executor == "isolated_warm"

    with pytest.raises(SimulationError, match="ValueError: bad parameter x=3") as err:
        ex.run(_call(ref, "boom", x=3))
    assert err.value.remote_type == "ValueError"
    assert 'model.py", line' in err.value.remote_traceback
    assert "runner.py" not in err.value.remote_traceback  # the user's frames only
    with pytest.raises(SimulationError, match="cannot travel back"):
        ex.run(_call(ref, "unpicklable"))
    with pytest.raises(EntrypointError, match="'model:nope'"):
        ex.run(_call(ref, "nope"))
    with pytest.raises(EntrypointError, match="No module named 'nomodule'"):
        ex.run(Call(bundle=ref, entrypoint="nomodule:sim", args=({}, 0)))
    # an undeclared dependency, and our own package: the venv has neither
    with pytest.raises(MissingDependencyError, match="imports 'tinylib'") as err:
        ex.run(_call(ref, "imports_tinylib"))
    assert err.value.missing == "tinylib"
    with pytest.raises(MissingDependencyError, match="imports 'modelops_runtime'"):
        ex.run(_call(ref, "imports_runtime"))

    after = ex.run(_call(ref, seed=9))  # the same process, still warm, state intact
    assert after.pid == results[0].pid and after.outputs["count"] == 6
    stats = ex.stats()
    assert stats["spawns"] == 1 and stats["size"] == 1
    assert sum(stats["removals"].values()) == 0


def test_allow_listed_environment(tmp_path, warm, monkeypatch):
    monkeypatch.setenv("WORKER_SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("MODEL_THREADS", "3")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    ex = warm(env_passthrough="MODEL_THREADS,NOT_SET_ANYWHERE")
    ref = _bundle(tmp_path)
    out = ex.run(_call(ref, "env")).outputs
    env = out["env"]
    assert "WORKER_SECRET_TOKEN" not in env and "s3cr3t" not in env.values()
    assert not any(k.startswith(("MODELOPS_", "UV_", "DASK_")) for k in env)
    assert env["MODEL_THREADS"] == "3" and env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"] == os.environ["HOME"]
    venv = env["VIRTUAL_ENV"]
    assert env["PATH"].startswith(f"{venv}/bin")
    assert out["path0"] == out["cwd"] == str(ex.bundles.path(ref))


def test_failed_install_is_typed_and_leaves_nothing(tmp_path, warm):
    ex = warm()
    bad = _bundle(tmp_path, "bad", requirements="nosuchpkg==1.0\n")
    with pytest.raises(EnvironmentBuildError, match="nosuchpkg") as err:
        ex.run(_call(bad))
    assert "uv pip install" in str(err.value) and "nosuchpkg" in err.value.uv_output
    assert err.value.requirements == ["nosuchpkg==1.0"]
    venvs = tmp_path / "venvs"
    assert sorted(p.name for p in venvs.iterdir()) == [".locks"]  # no half venv kept
    assert ex.stats()["size"] == 0 and ex.warm_pids() == []
    # the same executor goes on with a good bundle, and fails the bad one again (no reuse)
    good = _bundle(tmp_path, "good", requirements="tinylib==2.0\n")
    assert ex.run(_call(good, "imports_tinylib")).outputs == {"version": "2.0"}
    with pytest.raises(EnvironmentBuildError):
        ex.run(_call(bad))


def test_half_built_venv_without_fingerprint_is_rebuilt(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    half = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    (half / "bin").mkdir(parents=True)
    (half / "junk").write_text("a build that died here")
    result = ex.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    assert not (half / "junk").exists() and (half / FINGERPRINT).is_file()
    assert ex.stats()["venv_builds"] == 1


def test_validate_deps_rebuilds_a_venv_whose_interpreter_does_not_start(tmp_path, warm):
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    trusting = warm(validate_deps="false", max_process_reuse=1)
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    python = tmp_path / "venvs" / venv_key(["tinylib==1.0"]) / "bin" / "python"
    python.unlink()
    python.write_text("#!/bin/sh\necho 'broken interpreter' >&2\nexit 7\n")
    python.chmod(0o755)
    with pytest.raises(ProcessCrashed, match="could not start") as err:
        trusting.run(_call(ref, "imports_tinylib"))
    assert err.value.exit_code == 7 and "broken interpreter" in err.value.log_tail
    # nothing kept of the failed start; the first task's process retires in the background
    wait_for(lambda: trusting.warm_pids() == [], 60, "the retired process to be reaped")

    validating = warm(max_process_reuse=1)
    result = validating.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    assert validating.stats()["venv_builds"] == 1
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}


def test_lru_eviction_and_waiting_when_all_busy(tmp_path, warm):
    ex = warm(max_warm_processes=1)
    a, b = _bundle(tmp_path, "a"), _bundle(tmp_path, "b", extra={"other.py": "X = 1\n"})
    pid_a = ex.run(_call(a)).pid
    pid_b = ex.run(_call(b)).pid
    assert pid_a != pid_b and not _alive(pid_a)
    assert ex.stats()["removals"]["lru"] == 1

    # b is busy until the flag exists; a task for a must wait for the only slot
    flag, started = tmp_path / "flag", tmp_path / "started"
    results, sizes = {}, []
    t_b = threading.Thread(target=lambda: results.__setitem__(
        "b", ex.run(_call(b, "wait_for_flag", flag=str(flag), started=str(started)))))
    t_a = threading.Thread(target=lambda: results.__setitem__("a", ex.run(_call(a, seed=1))))
    t_b.start()
    wait_for(started.exists, 60, "the task of bundle b to start")
    t_a.start()
    for _ in range(20):
        sizes.append(len(ex.warm_pids()))
        t_a.join(0.01)
    assert "a" not in results and t_a.is_alive()  # still waiting: the pool is full
    flag.touch()
    t_b.join(60)
    t_a.join(60)
    assert results["b"].pid == pid_b and results["a"].outputs["count"] == 1
    assert max(sizes) <= 1 and len(ex.warm_pids()) <= 1
    assert ex.stats()["removals"]["lru"] == 2


def test_memory_budget_evicts_idle_processes_lru(tmp_path, warm):
    ex = warm(pool_memory_bytes="120Mi")
    a, b = _bundle(tmp_path, "a"), _bundle(tmp_path, "b", extra={"other.py": "X = 1\n"})
    pid_a = ex.run(_call(a, "hold", mb=60)).pid
    assert ex.stats()["removals"]["memory_budget"] == 0  # ~70 MiB: under the budget
    pid_b = ex.run(_call(b, "hold", mb=60)).pid
    wait_for(lambda: ex.stats()["removals"]["memory_budget"] >= 1, 60,
             "the pool to evict a process over its memory budget")
    assert not _alive(pid_a) and _alive(pid_b)  # least recently used went first
    assert ex.stats()["size"] == 1
    assert ex.run(_call(b, "sim")).pid == pid_b


def test_reuse_limit_and_ttl_retire_between_tasks(tmp_path, warm):
    ex = warm(max_process_reuse=3)
    ref = _bundle(tmp_path)
    results = [ex.run(_call(ref, seed=s)) for s in range(7)]
    assert [r.outputs["count"] for r in results] == [1, 2, 3, 1, 2, 3, 1]
    assert len({r.pid for r in results}) == 3
    assert ex.stats()["removals"]["reuse"] == 2

    ttl = warm(process_ttl=1)
    first = ttl.run(_call(ref))
    wait_for(lambda: ttl.stats()["removals"]["ttl"] == 1, 30,
             "the idle process to be retired after its TTL")
    assert ttl.stats()["size"] == 0
    wait_for(lambda: not _alive(first.pid), 30, "the retired process to exit")
    again = ttl.run(_call(ref))
    assert again.pid != first.pid and again.outputs["count"] == 1


def test_retirement_jitter_has_a_floor():
    reuse = {jittered_reuse(1000) for _ in range(500)}
    assert min(reuse) >= 900 and max(reuse) <= 1000 and len(reuse) > 10
    assert {jittered_reuse(1) for _ in range(50)} == {1}
    ttls = [jittered_ttl(3600) for _ in range(500)]
    assert min(ttls) >= 3240 and max(ttls) <= 3600 and len(set(ttls)) > 10


def test_health_check_replaces_dead_and_stopped_idle_processes(tmp_path, warm):
    ex = warm()
    ex.pool.health_timeout = 1.0  # keep the stopped-process case short
    ref = _bundle(tmp_path)
    first = ex.run(_call(ref)).pid
    os.kill(first, signal.SIGKILL)
    second = ex.run(_call(ref))
    assert second.pid != first and second.outputs["count"] == 1
    assert ex.stats()["removals"]["crash"] == 1

    os.kill(second.pid, signal.SIGSTOP)  # alive but not answering
    third = ex.run(_call(ref))
    assert third.pid != second.pid and third.outputs["count"] == 1
    assert ex.stats()["removals"]["unhealthy"] == 1
    assert not _alive(second.pid)


def test_shutdown_terminates_then_kills_process_trees(tmp_path, warm):
    stubborn = '''
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
CHILD = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

def child(params, seed):
    return {"child": CHILD.pid}
'''
    ex = warm()
    ex.pool.stop_grace = 1.0
    ref = _bundle(tmp_path, extra={"stubborn.py": stubborn})
    result = ex.run(Call(bundle=ref, entrypoint="stubborn:child", args=({}, 0)))
    pids = [result.pid, result.outputs["child"]]
    assert all(_alive(p) for p in pids)
    ex.shutdown()
    assert not [p for p in pids if _alive(p)]
    with pytest.raises(ModelOpsError, match="shut down"):
        ex.run(_call(ref))


def test_50mb_each_way_with_user_output_and_log_tail(tmp_path, warm):
    import hashlib

    ex = warm()
    ref = _bundle(tmp_path)
    data = os.urandom(25 << 20).hex()  # 50 MB in
    result = ex.run(_call(ref, "echo", data=data))
    assert result.outputs["back"] == data.encode()  # 50 MB out
    assert result.outputs["sha"] == hashlib.sha256(data.encode()).hexdigest()
    with pytest.raises(SimulationError, match="failed loudly") as err:
        ex.run(_call(ref, "fail_loud"))
    # the tail holds this task's output, not the megabytes printed before
    assert err.value.log_tail.strip() == "last words of the model"
    assert ex.run(_call(ref, "sim")).pid == result.pid


# -- retirement in the background (the reaper) -------------------------------------------


def _lingering(ref, flag, ignore_term=True):
    return Call(bundle=ref, entrypoint="slowexit:lingers",
                args=({"flag": str(flag), "ignore_term": ignore_term}, 0))


def test_retirement_does_not_hold_the_result_and_leaves_nothing(tmp_path, warm, wait_gone):
    ex = warm(max_process_reuse=1)
    ex.pool.stop_grace = 60.0  # the slow exit is ended by the flag here, not by signals
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    flag = tmp_path / "flag"
    first = ex.run(_lingering(ref, flag))
    # the result is back while its process is still exiting (in its atexit handler)
    assert _alive(first.pid) and first.pid in ex.warm_pids()
    stats = ex.stats()
    assert stats["removals"]["reuse"] == 1 and stats["size"] == 0  # counted when retired
    second = ex.run(_call(ref))
    assert second.pid != first.pid and second.outputs["count"] == 1
    flag.touch()
    # the retired processes and the child one left behind are gone, and nothing else runs
    wait_gone([first.pid, first.outputs["child"], second.pid])
    wait_for(lambda: ex.warm_pids() == [], 60, "the reaper to finish")
    stats = ex.stats()
    assert stats["spawns"] == 2 and stats["removals"]["reuse"] == 2
    assert sum(stats["removals"].values()) == 2


def test_a_retiring_process_keeps_its_slot_until_it_is_gone(tmp_path, warm):
    ex = warm(max_process_reuse=1, max_warm_processes=1)
    ex.pool.stop_grace = 60.0
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    flag = tmp_path / "flag"
    first = ex.run(_lingering(ref, flag))
    results, live = {}, []
    waiter = threading.Thread(target=lambda: results.__setitem__("next", ex.run(_call(ref))))
    waiter.start()
    for _ in range(20):  # MAX_WARM_PROCESSES=1: no second process while the first exits
        live.append(len(ex.warm_pids()))
        waiter.join(0.02)
    assert "next" not in results and _alive(first.pid)
    flag.touch()
    waiter.join(60)
    assert results["next"].pid != first.pid and not _alive(first.pid)
    assert max(live) == 1


def test_shutdown_waits_for_the_reaper_and_kills_stubborn_retirees(tmp_path, warm):
    ex = warm(max_process_reuse=1)
    ex.pool.stop_grace = 1.0
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    # ignores SIGTERM and waits at exit for a flag that never comes
    retiree = ex.run(_lingering(ref, tmp_path / "never"))
    pids = [retiree.pid, retiree.outputs["child"]]
    assert _alive(retiree.pid) and ex.warm_pids() == [retiree.pid]
    ex.shutdown()
    assert not [p for p in pids if _alive(p)]
    assert not ex.pool._reaper.is_alive() and ex.warm_pids() == []
    assert ex.stats()["removals"]["reuse"] == 1


# -- the runner: a lean start, its wire format, its arguments ------------------------------


def test_fresh_process_starts_lean_and_armed_against_parent_death(tmp_path, warm):
    """MAX_PROCESS_REUSE=1 pays the runner's start on every task: it must not load what it
    does not need (argparse, threading, pickle... cost milliseconds each)."""
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path, extra={"lean.py": LEAN})
    loaded = set(ex.run(Call(bundle=ref, entrypoint="lean:loaded", args=({}, 0)))
                 .outputs["modules"])
    heavy = {"argparse", "threading", "pickle", "_pickle", "traceback", "re", "enum",
             "signal", "tokenize", "importlib.util"}
    assert not heavy & loaded, sorted(heavy & loaded)
    # the kernel kills it with its parent, armed on the main thread before any user code
    assert ex.run(_call(ref, "death_signal")).outputs == {"signal": signal.SIGKILL}


def test_outputs_keep_their_types_on_the_wire(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path)
    params = {"numbers": list(range(3000)), "pairs": [(1, "a")],
              "ordered": collections.OrderedDict(b=2)}
    out = ex.run(Call(bundle=ref, entrypoint="model:kinds", args=(params, 0))).outputs
    assert type(out["bytearray"]) is bytearray and out["bytearray"] == b"ab"
    assert out["array"] == array.array("d", [1.5])
    assert type(out["ordered"]) is collections.OrderedDict
    assert out["big"] == list(range(5000))
    assert out["plain"] == {"t": (1, 2.5, None, True, b"x", "s"), "l": [-0.0]}
    assert out["echo"] == params and type(out["echo"]["ordered"]) is collections.OrderedDict
    # a memoryview cannot be pickled: a clear error, never silently turned into bytes
    with pytest.raises(SimulationError, match="cannot travel back"):
        ex.run(_call(ref, "view"))
    assert ex.run(_call(ref)).outputs["count"] == 1  # the same process goes on


@pytest.mark.parametrize("args", [
    [], ["--request-fd", "3"],
    ["--request-fd", "3", "--response-fd", "4", "--lifeline-fd", "5", "--parent-pid", "1",
     "--bundel-dir", "/x"],
    ["--request-fd", "3", "--response-fd", "4", "--lifeline-fd", "five", "--parent-pid", "1",
     "--bundle-dir", "/x"]], ids=["none", "missing", "misspelt", "not-a-number"])
def test_runner_rejects_bad_arguments_with_its_usage(args):
    proc = subprocess.run([sys.executable, "-I", str(RUNNER), *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: runner --request-fd N --response-fd N")
    assert "the warm pool starts this program" in proc.stderr


def test_damaged_compiled_runner_is_replaced(tmp_path, warm):
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    first = ex.run(_call(ref))
    venv = tmp_path / "venvs" / venv_key([])
    (program,) = venv.glob("modelops-runner-*.pyc")
    program.write_bytes(program.read_bytes()[:40])  # truncated, e.g. by a full disk
    again = ex.run(_call(ref))
    assert again.pid != first.pid and again.outputs["count"] == 1
    assert [p.name for p in venv.glob("*modelops-runner-*")] == [program.name]  # no leftovers
    assert len(program.read_bytes()) > 40
