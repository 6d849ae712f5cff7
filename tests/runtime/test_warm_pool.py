"""IsolatedWarmExecEnv driven directly in this process: real BundleStore, real uv venvs,
real warm processes and real signals (no Dask here; the cluster tests are
test_warm_cluster.py). Covers the pool policies and bad inputs that are slow or awkward
to reach through a scheduler."""

from __future__ import annotations

import array
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelops_runtime.errors import (BundleError, EntrypointError, EnvironmentBuildError,
                                     MissingDependencyError, ModelOpsError, ProcessCrashed,
                                     SimulationError, WorkerStopping)
from modelops_runtime.models import Call
from modelops_runtime.worker.warm import pool as pool_module
from modelops_runtime.worker.warm.pool import WarmPool, jittered_reuse, jittered_ttl
from modelops_runtime.worker.warm.runner.program import RUNNER
from modelops_runtime.worker.warm.scratch import SCRATCH_PREFIX
from modelops_runtime.worker.warm.venvs.store import FINGERPRINT, venv_key
from support.bundles import MISSING_INSIDE, make_bundle
from support.cluster import wait_for
from support.wheels import offline_uv_env

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

def exits(params, seed):
    sys.exit(params.get("code", 3))

def interrupted(params, seed):
    raise KeyboardInterrupt("stop right there")

def writes(params, seed):
    seen = os.path.exists("out.txt")
    Path("out.txt").write_text(f"written by task {seed}")
    return {"cwd": os.getcwd(), "seen": seen, "pid": os.getpid()}

def pid_gone(params, seed):
    try:
        os.kill(params["pid"], 0)
    except ProcessLookupError:
        return {"gone": True}
    return {"gone": False}
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
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # how numeric libraries compute
    ex = warm(env_passthrough="MODEL_THREADS,NOT_SET_ANYWHERE")
    ref = _bundle(tmp_path)
    out = ex.run(_call(ref, "env")).outputs
    env = out["env"]
    assert "WORKER_SECRET_TOKEN" not in env and "s3cr3t" not in env.values()
    assert not any(k.startswith(("MODELOPS_", "UV_", "DASK_")) for k in env)
    assert env["MODEL_THREADS"] == "3" and env["LC_ALL"] == "C.UTF-8"
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    # HOME, TMPDIR and the caches of scientific packages: the process's own scratch
    assert env["HOME"] == env["TMPDIR"] == env["JOBLIB_TEMP_FOLDER"] == out["cwd"]
    assert env["XDG_CACHE_HOME"] == f"{out['cwd']}/.cache"
    assert env["MPLCONFIGDIR"] == f"{out['cwd']}/.config/matplotlib"
    venv = env["VIRTUAL_ENV"]
    assert env["PATH"].startswith(f"{venv}/bin")
    # the bundle is importable; the working directory is the process's own scratch dir
    assert out["path0"] == str(ex.bundles.path(ref))
    assert Path(out["cwd"]).parent == Path(tempfile.gettempdir())
    assert Path(out["cwd"]).name.startswith(SCRATCH_PREFIX)


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
    # a generation published without its fingerprint (e.g. by hand, or damaged)
    link = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    half = tmp_path / "venvs" / f"{link.name}@{'0' * 12}"
    (half / "bin").mkdir(parents=True)
    (half / "junk").write_text("a build that died here")
    link.symlink_to(half.name)
    result = ex.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    assert os.readlink(link) != half.name and (link / FINGERPRINT).is_file()
    assert not (link / "junk").exists()
    assert ex.stats()["venv_builds"] == 1


def test_validate_deps_rebuilds_a_venv_whose_interpreter_does_not_start(tmp_path, warm):
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    trusting = warm(validate_deps="false", max_process_reuse=1, fresh_process_from="exec")
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

    validating = warm(max_process_reuse=1, fresh_process_from="exec")
    result = validating.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    assert validating.stats()["venv_builds"] == 1
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}


@pytest.mark.parametrize("change", ["pip-install", "deleted-file"])
def test_validate_deps_rebuilds_a_venv_whose_installed_distributions_changed(
        tmp_path, warm, wheelhouse, change):  # noqa: F811 - fixture
    """A venv changed after its build (a `pip install` into it, a deleted file) fails
    validation, is rebuilt and counted as such; without validation it is reused as is."""
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    trusting = warm(validate_deps="false", max_process_reuse=1)
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    venv = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    if change == "pip-install":
        subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--quiet",
                        "--python", str(venv / "bin" / "python"), "tinylib==2.0"],
                       env={**os.environ, **offline_uv_env(wheelhouse),
                            "UV_CACHE_DIR": str(tmp_path / "uv-cache-test")},
                       check=True, capture_output=True, timeout=120)
        modified = {"version": "2.0"}
    else:
        next(venv.glob("lib/python*/site-packages/tinylib/__init__.py")).unlink()
        modified = None
    if modified is not None:   # the trusting worker reuses the modified venv as it is
        assert trusting.run(_call(ref, "imports_tinylib")).outputs == modified

    validating = warm(max_process_reuse=1)
    result = validating.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    stats = validating.stats()
    assert stats["venv_builds"] == 1 and stats["venv_invalid"] == 1, stats
    # the rebuilt venv validates again: the next task reuses it
    again = validating.run(_call(ref, "imports_tinylib"))
    assert again.venv_cache_hit is True and validating.stats()["venv_invalid"] == 1


def _tinylib_built(tmp_path: Path, warm):
    """(bundle, executor, venv, tinylib's module file): a bundle needing tinylib run once by
    an executor that does not validate cached venvs (so an edit stays for the next)."""
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    trusting = warm(validate_deps="false", max_process_reuse=1, fresh_process_from="exec")
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    venv = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    return ref, trusting, venv, next(venv.glob("lib/python*/site-packages/tinylib/__init__.py"))


def _edit_in_place(path: Path, old: bytes, new: bytes) -> bytes:
    """Rewrite ``path`` in place (its inode, which uv's cache shares), ``old`` → ``new`` of
    the same length, with the write bit given and taken back as its owner would (root
    needs none); returns the content before."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        source = fh.read()
        fh.seek(0)
        fh.write(source.replace(old, new))
    os.chmod(path, 0o444)
    return source


@pytest.mark.parametrize("mtime", ["moved", "restored"])
def test_validate_deps_rebuilds_a_venv_with_a_file_edited_in_place_at_its_size(
        tmp_path, warm, caplog, mtime):
    """An edit that keeps a file's size (a stray write, an editor saving in place), even
    with its mtime set back (``utime``; a ctime cannot be set back), fails validation once
    and the task runs in a venv rebuilt as uv builds it. The edited file is also uv's
    cache's (a hard link): the rebuild must not link it again."""
    ref, trusting, venv, module = _tinylib_built(tmp_path, warm)
    before = module.stat()
    source = _edit_in_place(module, b"1.0", b"6.6")
    # the mtime set back, or moved on by seconds (a .pyc records its source's mtime in
    # whole seconds: an edit within the build's second would not be imported)
    os.utime(module, ns=(before.st_atime_ns,
                         before.st_mtime_ns + (0 if mtime == "restored" else 5 * 10**9)))
    if mtime == "moved":  # the edit is live (set back, only its stale .pyc hides it)
        assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "6.6"}
    assert module.stat().st_size == before.st_size and b"6.6" in module.read_bytes()

    caplog.set_level("WARNING", logger="modelops_runtime.venvs")
    validating = warm(max_process_reuse=1)
    result = validating.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    stats = validating.stats()
    assert stats["venv_builds"] == 1 and stats["venv_invalid"] == 1, stats
    said = [r.getMessage() for r in caplog.records if "is not reused" in r.getMessage()]
    assert len(said) == 1 and "tinylib/__init__.py changed after it was built (same size, " \
        "other content); rebuilding it" in said[0], said
    rebuilt = next(venv.glob("lib/python*/site-packages/tinylib/__init__.py"))
    assert rebuilt.read_bytes() == source
    again = validating.run(_call(ref, "imports_tinylib"))
    assert again.venv_cache_hit is True and again.outputs == {"version": "1.0"}
    assert validating.stats()["venv_invalid"] == 1


@pytest.mark.parametrize("later", ["other-set", "fresh-venv"])
def test_a_file_edited_in_place_in_one_venv_reaches_no_later_build(tmp_path, warm, caplog,
                                                                   later):
    """A cached venv's files are hard links of uv's cache's: an edit in place changes the
    cache too. A later build that links the file (another dependency set with the same
    package, or diagnose-fresh-venv's pristine build of the same set, which must be as if
    just built) finds it not as its package's RECORD says, removes the package from uv's
    cache and builds again from the packages."""
    ref, trusting, venv, module = _tinylib_built(tmp_path, warm)
    before = module.stat()
    _edit_in_place(module, b"1.0", b"6.6")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 5 * 10**9))
    assert trusting.run(_call(ref, "imports_tinylib")).outputs == {"version": "6.6"}

    caplog.set_level("WARNING", logger="modelops_runtime.venvs")
    if later == "other-set":
        ref = _bundle(tmp_path, "other", requirements="tinylib==1.0\ntinydep==0.1\n")
        ex = warm(max_process_reuse=1, fresh_process_from="exec")
    else:
        ex = warm(max_process_reuse=1, force_fresh_venv="true")
    assert ex.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    said = [r.getMessage() for r in caplog.records if "uv's cache holds" in r.getMessage()]
    assert len(said) == 1 and "changed files of tinylib" in said[0], said
    # the cache was healed: the build after that links tinylib as packaged again
    third = _bundle(tmp_path, "third", requirements="tinylib==1.0\ntinydep\n")
    assert warm(max_process_reuse=1).run(_call(third, "imports_tinylib")).outputs == \
        {"version": "1.0"}
    assert len([r for r in caplog.records if "uv's cache holds" in r.getMessage()]) == 1


def test_validate_deps_reuses_a_venv_whose_files_only_gained_links(tmp_path, warm):
    """uv links the same wheel file from its cache into every venv that installs it, which
    moves the file's ctime in the venvs built before: the check reads such a file and
    reuses the venv (no rebuild), and still refuses one added file."""
    first = _bundle(tmp_path, "first", requirements="tinylib==1.0\n")
    other = _bundle(tmp_path, "other", requirements="tinylib==1.0\ntinydep==0.1\n")
    builder = warm(max_process_reuse=1, fresh_process_from="exec")
    assert builder.run(_call(first, "imports_tinylib")).outputs == {"version": "1.0"}
    venv = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    module = next(venv.glob("lib/python*/site-packages/tinylib/__init__.py"))
    ctime = module.stat().st_ctime_ns
    assert builder.run(_call(other, "imports_tinylib")).outputs == {"version": "1.0"}
    assert module.stat().st_ctime_ns != ctime and module.stat().st_nlink >= 3, \
        "the second build did not link tinylib's file from uv's cache: nothing is tested"

    validating = warm(max_process_reuse=1, fresh_process_from="exec")  # a new worker process
    reused = validating.run(_call(first, "imports_tinylib"))
    assert reused.venv_cache_hit is True and validating.stats()["venv_invalid"] == 0

    site = module.parent.parent
    os.chmod(site, 0o755)
    (site / "planted.pth").write_text("import os\n")  # run by every interpreter start
    os.chmod(site, 0o555)
    checking = warm(max_process_reuse=1, fresh_process_from="exec")
    rebuilt = checking.run(_call(first, "imports_tinylib"))
    assert rebuilt.venv_cache_hit is False and checking.stats()["venv_invalid"] == 1
    rebuilt_site = next(venv.glob("lib/python*/site-packages"))
    assert not (rebuilt_site / "planted.pth").exists()


def test_lru_eviction_and_waiting_when_all_busy(tmp_path, warm, procs, waits_in):
    ex = warm(max_warm_processes=1)
    a, b = _bundle(tmp_path, "a"), _bundle(tmp_path, "b", extra={"other.py": "X = 1\n"})
    proc_a = procs.track(ex.run(_call(a)).pid)
    pid_b = ex.run(_call(b)).pid
    assert proc_a.pid != pid_b and not procs.alive(proc_a)
    assert ex.stats()["removals"]["lru"] == 1

    # b is busy until the flag exists; a task for a must wait for the only slot
    flag, started = tmp_path / "flag", tmp_path / "started"
    results = {}
    t_b = threading.Thread(target=lambda: results.__setitem__(
        "b", ex.run(_call(b, "wait_for_flag", flag=str(flag), started=str(started)))))
    t_a = threading.Thread(target=lambda: results.__setitem__(
        "a", ex.run(_call(a, "pid_gone", pid=pid_b))))
    t_b.start()
    wait_for(started.exists, 60, "the task of bundle b to start")
    t_a.start()
    wait_for(lambda: waits_in(t_a, "acquire", pool_module.__file__) or not t_a.is_alive(), 60,
             "the task of bundle a to wait for a slot")
    assert "a" not in results and ex.warm_pids() == [pid_b]  # waiting: the pool is full
    flag.touch()
    t_b.join(60)
    t_a.join(60)
    assert results["b"].pid == pid_b
    # a's process started only once b's was gone (evicted when b's task ended)
    assert results["a"].outputs == {"gone": True}
    stats = ex.stats()
    assert stats["spawns"] == 3 and stats["removals"]["lru"] == 2 and stats["size"] == 1
    assert ex.warm_pids() == [results["a"].pid]


def test_memory_budget_evicts_idle_processes_lru(tmp_path, warm, procs):
    ex = warm(pool_memory_bytes="120Mi")
    a, b = _bundle(tmp_path, "a"), _bundle(tmp_path, "b", extra={"other.py": "X = 1\n"})
    proc_a = procs.track(ex.run(_call(a, "hold", mb=60)).pid)
    assert ex.stats()["removals"]["memory_budget"] == 0  # ~70 MiB: under the budget
    proc_b = procs.track(ex.run(_call(b, "hold", mb=60)).pid)
    wait_for(lambda: ex.stats()["removals"]["memory_budget"] >= 1, 60,
             "the pool to evict a process over its memory budget")
    procs.wait_gone([proc_a])  # counted when handed to the reaper, gone soon after
    assert procs.alive(proc_b)  # least recently used went first
    assert ex.stats()["size"] == 1
    assert ex.run(_call(b, "sim")).pid == proc_b.pid


def test_reuse_limit_and_ttl_retire_between_tasks(tmp_path, warm, procs):
    ex = warm(max_process_reuse=3)
    ref = _bundle(tmp_path)
    results = [ex.run(_call(ref, seed=s)) for s in range(7)]
    assert [r.outputs["count"] for r in results] == [1, 2, 3, 1, 2, 3, 1]
    assert len({r.pid for r in results}) == 3
    assert ex.stats()["removals"]["reuse"] == 2

    ttl = warm(process_ttl=1)
    first = ttl.run(_call(ref))
    first_proc = procs.track(first.pid)
    wait_for(lambda: ttl.stats()["removals"]["ttl"] == 1, 30,
             "the idle process to be retired after its TTL")
    assert ttl.stats()["size"] == 0
    procs.wait_gone([first_proc], 30)
    again = ttl.run(_call(ref))
    assert again.pid != first.pid and again.outputs["count"] == 1


def test_retirement_jitter_has_a_floor():
    reuse = {jittered_reuse(1000) for _ in range(500)}
    assert min(reuse) >= 900 and max(reuse) <= 1000 and len(reuse) > 10
    assert {jittered_reuse(1) for _ in range(50)} == {1}
    ttls = [jittered_ttl(3600) for _ in range(500)]
    assert min(ttls) >= 3240 and max(ttls) <= 3600 and len(set(ttls)) > 10


def test_health_check_replaces_dead_and_stopped_idle_processes(tmp_path, warm, procs):
    ex = warm()
    ex.pool.health_timeout = 1.0  # keep the stopped-process case short
    ref = _bundle(tmp_path)
    first = ex.run(_call(ref)).pid
    os.kill(first, signal.SIGKILL)
    second = ex.run(_call(ref))
    assert second.pid != first and second.outputs["count"] == 1
    assert ex.stats()["removals"]["crash"] == 1

    second_proc = procs.track(second.pid)
    second_proc.suspend()  # SIGSTOP: alive but not answering
    third = ex.run(_call(ref))
    assert third.pid != second.pid and third.outputs["count"] == 1
    assert ex.stats()["removals"]["unhealthy"] == 1
    assert not procs.alive(second_proc)


def test_shutdown_terminates_then_kills_process_trees(tmp_path, warm, procs):
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
    tree = [procs.track(result.pid), procs.track(result.outputs["child"])]
    # the child ended with the task that started it (test_task_tree.py); the warm process,
    # which ignores SIGTERM, is the shutdown's to end
    assert [p.pid for p in procs.running(tree)] == [result.pid]
    ex.shutdown()
    assert not procs.running(tree)
    with pytest.raises(WorkerStopping, match="shut down: this Dask worker process is stopping"):
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


def test_retirement_does_not_hold_the_result_and_leaves_nothing(tmp_path, warm, wait_gone,
                                                                 procs):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ex.pool.stop_grace = 60.0  # the slow exit is ended by the flag here, not by signals
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    flag = tmp_path / "flag"
    first = ex.run(_lingering(ref, flag))
    left = [procs.track(first.pid), procs.track(first.outputs["child"])]
    # the result is back while its process is still exiting (in its atexit handler)
    assert procs.alive(left[0]) and first.pid in ex.warm_pids()
    stats = ex.stats()
    assert stats["removals"]["reuse"] == 1 and stats["size"] == 0  # counted when retired
    second = ex.run(_call(ref))
    left.append(procs.track(second.pid))
    assert second.pid != first.pid and second.outputs["count"] == 1
    flag.touch()
    # the retired processes and the child one left behind are gone, and nothing else runs
    wait_gone(left)
    wait_for(lambda: ex.warm_pids() == [], 60, "the reaper to finish")
    stats = ex.stats()
    assert stats["spawns"] == 2 and stats["removals"]["reuse"] == 2
    assert sum(stats["removals"].values()) == 2


def test_a_retiring_process_keeps_its_slot_until_it_is_gone(tmp_path, warm, procs, waits_in):
    ex = warm(max_process_reuse=1, fresh_process_from="exec", max_warm_processes=1)
    ex.pool.stop_grace = 60.0
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    flag = tmp_path / "flag"
    first = ex.run(_lingering(ref, flag))
    first_proc = procs.track(first.pid)
    results = {}
    waiter = threading.Thread(target=lambda: results.__setitem__(
        "next", ex.run(_call(ref, "pid_gone", pid=first.pid))))
    waiter.start()
    # MAX_WARM_PROCESSES=1: no second process while the first exits
    wait_for(lambda: waits_in(waiter, "acquire", pool_module.__file__)
             or not waiter.is_alive(), 60, "the next task to wait for the retiring one's slot")
    assert "next" not in results and procs.alive(first_proc)
    assert ex.warm_pids() == [first.pid]
    flag.touch()
    waiter.join(60)
    # the next task's process started only once the first one was gone (and reaped)
    assert results["next"].pid != first.pid and results["next"].outputs == {"gone": True}
    assert not procs.alive(first_proc)
    assert ex.stats()["spawns"] == 2


def test_shutdown_waits_for_the_reaper_and_kills_stubborn_retirees(tmp_path, warm, procs):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ex.pool.stop_grace = 1.0
    ref = _bundle(tmp_path, extra={"slowexit.py": SLOW_EXIT})
    # ignores SIGTERM and waits at exit for a flag that never comes
    retiree = ex.run(_lingering(ref, tmp_path / "never"))
    tree = [procs.track(retiree.pid), procs.track(retiree.outputs["child"])]
    assert procs.alive(tree[0]) and ex.warm_pids() == [retiree.pid]
    ex.shutdown()
    assert not procs.running(tree)
    assert ex.warm_pids() == []  # the reaper finished them all
    assert ex.stats()["removals"]["reuse"] == 1


# -- the runner: a lean start, its wire format, its arguments ------------------------------


def test_fresh_process_starts_lean_and_armed_against_parent_death(tmp_path, warm):
    """MAX_PROCESS_REUSE=1 pays the runner's start on every task: it must not load what it
    does not need (argparse, threading, pickle... cost milliseconds each)."""
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path, extra={"lean.py": LEAN})
    loaded = set(ex.run(Call(bundle=ref, entrypoint="lean:loaded", args=({}, 0)))
                 .outputs["modules"])
    heavy = {"argparse", "threading", "pickle", "_pickle", "traceback", "re", "enum",
             "signal", "tokenize", "importlib.util"}
    assert not heavy & loaded, sorted(heavy & loaded)
    # the runner's own files are loaded, not imported: nothing of them in sys.modules
    own = {"main", "frames", "confine", "template", "modelops_runner"}
    assert not {m for m in loaded if m.partition(".")[0] in own}, sorted(loaded)
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


@pytest.mark.parametrize("damaged", ["main", "frames", "template", "prewarm", "pycache",
                                     "clone"])
def test_damaged_compiled_runner_is_replaced(tmp_path, warm, damaged):
    """The program is compiled into one directory of the venv; any of its files damaged
    (the runner itself, a sibling it loads, one only a template loads) is replaced."""
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path)
    first = ex.run(_call(ref))
    venv = tmp_path / "venvs" / venv_key([])
    (program,) = venv.glob("modelops-runner-*")
    compiled = sorted(p.name for p in program.iterdir())
    assert compiled == ["clone.pyc", "confine.pyc", "frames.pyc", "main.pyc", "prewarm.pyc",
                        "pycache.pyc", "template.pyc"]
    file = program / f"{damaged}.pyc"
    file.write_bytes(file.read_bytes()[:40])  # truncated, e.g. by a full disk
    again = ex.run(_call(ref))
    assert again.pid != first.pid and again.outputs["count"] == 1
    assert [p.name for p in venv.glob("*modelops-runner-*")] == [program.name]  # no leftovers
    assert sorted(p.name for p in program.iterdir()) == compiled
    assert len(file.read_bytes()) > 40


# a bundle's own modules with the names of the runner's files
SHADOWS = {f"{name}.py": """
import os, sys

def where(params, seed):
    return {"name": __name__, "in_bundle": os.path.dirname(__file__) == sys.path[0]}
""" for name in ("main", "frames", "confine", "template", "prewarm", "pycache", "clone")}


@pytest.mark.parametrize("settings", [
    {}, {"max_process_reuse": 1}, {"max_process_reuse": 1, "fresh_process_from": "exec"}],
    ids=["reused", "from-template", "exec"])
def test_bundle_modules_named_like_the_runners_files_are_the_bundles(tmp_path, warm, settings):
    """The runner loads its sibling files without putting them into sys.modules: a
    bundle's modules of the same names are the ones its code imports."""
    ex = warm(**settings)
    ref = _bundle(tmp_path, extra=SHADOWS)
    for name in ("main", "frames", "confine", "template", "prewarm", "pycache", "clone"):
        out = ex.run(Call(bundle=ref, entrypoint=f"{name}:where", args=({}, 0))).outputs
        assert out == {"name": name, "in_bundle": True}, (name, out)


# -- what model code can do to its process, and what the user is told ---------------------


def test_exit_and_keyboard_interrupt_fail_the_task_and_keep_the_process_warm(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path, extra={"exit_on_import.py": "import sys\nsys.exit('no config')\n"})
    first = ex.run(_call(ref))
    with pytest.raises(SimulationError, match="raised SystemExit: 3") as err:
        ex.run(_call(ref, "exits", code=3))
    assert err.value.remote_type == "SystemExit" and "stays up" in str(err.value)
    with pytest.raises(SimulationError, match="KeyboardInterrupt: stop right there"):
        ex.run(_call(ref, "interrupted"))
    with pytest.raises(SimulationError, match="SystemExit: no config"):
        ex.run(Call(bundle=ref, entrypoint="exit_on_import:sim", args=({}, 0)))
    after = ex.run(_call(ref))  # the same process, its module state intact
    assert after.pid == first.pid and after.outputs["count"] == 2
    stats = ex.stats()
    assert stats["spawns"] == 1 and sum(stats["removals"].values()) == 0




def test_a_module_missing_from_the_bundle_is_not_called_a_dependency(tmp_path, warm):
    ex = warm()
    ref = _bundle(tmp_path, extra=MISSING_INSIDE)
    pid = ex.run(_call(ref)).pid
    for entrypoint, missing, where in [("sir.model:run", "sir.helpers", "sir/helpers.py"),
                                       ("sir.lazy:run", "sir.extra", "sir/extra.py"),
                                       ("flat:run", "util.io", "util/io.py")]:
        with pytest.raises(BundleError) as err:
            ex.run(Call(bundle=ref, entrypoint=entrypoint, args=({}, 0)))
        assert not isinstance(err.value, MissingDependencyError), str(err.value)
        assert err.value.missing == missing
        assert f"imports {missing!r}, a module of the bundle itself" in str(err.value)
        assert f"Add {where} to the bundle" in str(err.value)
    # a name the bundle has nothing of: a dependency, or the user's own file left out
    with pytest.raises(MissingDependencyError) as err:
        ex.run(Call(bundle=ref, entrypoint="own:run", args=({}, 0)))
    assert err.value.missing == "my_helpers"
    assert "requirements.txt" in str(err.value) and "add my_helpers.py to the bundle" in str(
        err.value)
    assert ex.run(_call(ref)).pid == pid  # the process stays warm throughout


def _pause_first_release_until_its_process_runs_again():
    """A thread trace hook (instrumentation, not a stand-in: the real code runs) that holds
    the first thread returning from WarmPool.release until another thread has taken that
    process and started a task in it: the widest window for reading its state too late."""
    lock = threading.Lock()
    claimed = []

    def on_return(frame, event, arg):
        if event == "return":
            with lock:
                first = not claimed
                claimed.append(True)
            if first:
                proc, count = frame.f_locals["proc"], frame.f_locals["proc"].task_count
                wait_for(lambda: proc.task_count > count, 60,
                         "another thread to run a task in the released process")
        return on_return

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code is WarmPool.release.__code__ and not claimed:
            return on_return
        return None

    return tracer, claimed


def test_each_process_counts_its_own_tasks_under_4_threads(tmp_path, warm):
    """A result's process_task_count is read while its thread still owns the process: with
    4 threads and 2 processes, each process's counts are exactly 1..n and agree with the
    process's own count, also when a thread is held right after handing its process back
    (another thread's task has then already been counted in it)."""
    ex = warm(max_warm_processes=2)
    ref = _bundle(tmp_path)
    results = [ex.run(_call(ref))]
    tracer, paused = _pause_first_release_until_its_process_runs_again()
    threading.settrace(tracer)
    try:
        with ThreadPoolExecutor(4) as threads:
            results += threads.map(lambda seed: ex.run(_call(ref, seed=seed)), range(1, 201))
    finally:
        threading.settrace(None)
    assert paused  # the window was really held open
    assert sorted(r.outputs["seed"] for r in results) == list(range(201))
    assert [r.process_task_count for r in results] == [r.outputs["count"] for r in results]
    by_pid = collections.defaultdict(list)
    for r in results:
        by_pid[r.pid].append(r.process_task_count)
    assert len(by_pid) <= 2
    for pid, counts in by_pid.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), pid


def _tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a directory and its content (byte-code caches aside)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_each_warm_process_writes_into_its_own_scratch_dir(tmp_path, warm, procs,
                                                            scratch_root):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")  # every task in a new process
    ref = _bundle(tmp_path)
    bundle_dir = ex.bundles.path(ref)
    before = _tree_snapshot(bundle_dir)
    first = ex.run(_call(ref, "writes", seed=1))
    first_proc = procs.track(first.pid)
    second = ex.run(_call(ref, "writes", seed=2))
    assert first.pid != second.pid
    # neither saw a file of another task, and the shared bundle cache is untouched
    assert first.outputs["seen"] is False and second.outputs["seen"] is False
    assert _tree_snapshot(bundle_dir) == before and not (bundle_dir / "out.txt").exists()
    cwds = [Path(first.outputs["cwd"]), Path(second.outputs["cwd"])]
    assert cwds[0] != cwds[1] and {c.parent for c in cwds} == {scratch_root}
    # a working directory goes with its process (retired in the background here)
    procs.wait_gone([first_proc])
    wait_for(lambda: ex.warm_pids() == [], 60, "the retired processes to be reaped")
    assert not cwds[0].exists() and not cwds[1].exists()


def test_a_task_ended_by_the_worker_shutting_down_says_so(tmp_path, warm, procs):
    ex = warm()
    ref = _bundle(tmp_path)
    flag, started = tmp_path / "flag", tmp_path / "started"
    errors = {}

    def task():
        try:
            ex.run(_call(ref, "wait_for_flag", flag=str(flag), started=str(started)))
        except ModelOpsError as exc:
            errors["task"] = exc

    thread = threading.Thread(target=task)
    thread.start()
    wait_for(started.exists, 60, "the task to start")
    (busy,) = [procs.track(pid) for pid in ex.warm_pids()]
    ex.shutdown()  # what the plugin does when the worker closes (e.g. a helm upgrade)
    thread.join(60)
    error = errors["task"]
    assert isinstance(error, WorkerStopping), f"{type(error).__name__}: {error}"
    assert "this Dask worker process is shutting down" in str(error)
    assert "crash" not in str(error) and "native code" not in str(error)
    assert error.pid == busy.pid and not procs.alive(busy)
    removals = ex.stats()["removals"]
    assert removals["shutdown"] == 1 and removals["crash"] == 0, removals


def test_a_venv_whose_interpreter_is_gone_names_the_real_error(tmp_path, warm, scratch_root):
    ex = warm(validate_deps="false", max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    assert ex.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    wait_for(lambda: ex.warm_pids() == [], 60, "the retired process to be reaped")
    venv = (tmp_path / "venvs" / venv_key(["tinylib==1.0"])).resolve()  # its generation
    (venv / "bin" / "python").unlink()

    def fds():
        return set(os.listdir("/proc/self/fd"))

    before = fds()
    with pytest.raises(EnvironmentBuildError) as err:
        ex.run(_call(ref, "imports_tinylib"))
    message = str(err.value)
    assert f"{venv / 'bin' / 'python'}: No such file or directory (ENOENT)" in message
    assert f"The venv {venv} is damaged" in message and "remove that directory" in message
    assert "MODELOPS_VALIDATE_DEPS" not in message and err.value.errno_name == "ENOENT"
    # nothing left of the attempt: no pipe, no working directory, no process
    wait_for(lambda: not fds() - before, 30, "the failed start's pipes to be closed",
             on_fail=lambda: f"still open: {sorted(fds() - before)}")
    assert not list(scratch_root.glob(f"{SCRATCH_PREFIX}*")) and ex.warm_pids() == []


_AT_FD_LIMIT = textwrap.dedent("""
    import json, os, resource, sys, time
    from modelops_runtime.bundles import BundleStore
    from modelops_runtime.config import RuntimeConfig
    from modelops_runtime.worker.executors.warm import IsolatedWarmExecEnv
    from modelops_runtime.models import Call

    config = RuntimeConfig.from_env()
    ex = IsolatedWarmExecEnv(config, BundleStore(config))
    call = Call(bundle=sys.argv[1], entrypoint="model:sim", args=({}, 0))
    report = {}
    try:
        ex.run(call)  # builds the venv and compiles the runner
        ex.run(call)  # checks the venv's interpreter (once): the next task only spawns
        deadline = time.monotonic() + 60  # MAX_PROCESS_REUSE=1: the retirement finishes
        while ex.warm_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ex.warm_pids(), "the first task's process was not reaped"
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        fds_before = len(open_fds)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        def room(limit):  # how many more files could be opened under this limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            opened = []
            try:
                while True:
                    opened.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for fd in opened:
                os.close(fd)
            return len(opened)

        limit = max(open_fds) + 4
        limit -= room(limit) - 3  # room for one pipe (2 fds) and one more: not 4 pipes
        assert room(limit) == 3
        try:
            ex.run(call)
        except BaseException as exc:
            report["type"] = type(exc).__name__
            report["message"] = str(exc)
            report["errno_name"] = getattr(exc, "errno_name", None)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        report["fds_leaked"] = len(os.listdir("/proc/self/fd")) - fds_before
        report["next"] = ex.run(call).outputs["seed"]  # the worker goes on once it can
    finally:
        ex.shutdown()
    print(json.dumps(report))
""")


def test_running_out_of_file_descriptors_is_not_blamed_on_the_venv(tmp_path, scratch_root,
                                                                     uv_offline):
    """A worker at its open-file limit: the start fails typed, naming EMFILE and the limit,
    closes what it opened, and the next task works once files are free again. Run in a
    child process: the limit applies to a whole process."""
    ref = _bundle(tmp_path)
    env = {**os.environ, "MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
           "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
           "MODELOPS_VENVS_DIR": str(tmp_path / "venvs"), "MODELOPS_MAX_PROCESS_REUSE": "1",
           "MODELOPS_FRESH_PROCESS_FROM": "exec"}
    child = subprocess.run([sys.executable, "-c", _AT_FD_LIMIT, ref], env=env, timeout=300,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["type"] == "ProcessStartFailed", report
    assert "creating its pipes failed: Too many open files (EMFILE)" in report["message"]
    assert "ulimit -n" in report["message"] and "MODELOPS_MAX_WARM_PROCESSES" in report["message"]
    assert "not of the bundle or its venv" in report["message"]
    assert "damaged" not in report["message"]
    assert report["errno_name"] == "EMFILE"
    assert report["fds_leaked"] == 0 and report["next"] == 0
    assert not list(scratch_root.glob(f"{SCRATCH_PREFIX}*"))


def test_validate_deps_notices_a_pip_install_after_the_venv_was_validated(
        tmp_path, warm, wheelhouse):  # noqa: F811 - fixture
    """A cache hit does not re-read every installed file (that costs milliseconds per task
    with numpy-sized venvs): the full check runs on first use and whenever a site-packages
    directory changes — which a `pip install` into the venv does."""
    ref = _bundle(tmp_path, requirements="tinylib==1.0\n")
    validating = warm(max_process_reuse=1, fresh_process_from="exec")
    assert validating.run(_call(ref, "imports_tinylib")).outputs == {"version": "1.0"}
    assert validating.run(_call(ref, "imports_tinylib")).venv_cache_hit is True
    venv = tmp_path / "venvs" / venv_key(["tinylib==1.0"])
    subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--quiet",
                    "--python", str(venv / "bin" / "python"), "tinylib==2.0"],
                   env={**os.environ, **offline_uv_env(wheelhouse),
                        "UV_CACHE_DIR": str(tmp_path / "uv-cache-test")},
                   check=True, capture_output=True, timeout=120)
    result = validating.run(_call(ref, "imports_tinylib"))
    assert result.outputs == {"version": "1.0"} and result.venv_cache_hit is False
    assert validating.stats()["venv_invalid"] == 1
