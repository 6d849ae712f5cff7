"""Fresh processes forked from a template (MAX_PROCESS_REUSE=1, FRESH_PROCESS_FROM=template),
driven directly in this process: real venvs, real templates, real forks and signals."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

import pytest

from modelops_runtime.errors import (MemoryLimitExceeded, ProcessCrashed, SimulationError,
                                     TaskTimeout)
from modelops_runtime.models import Call
from modelops_runtime.worker.warm.plans import plan_key
from modelops_runtime.worker.warm.runner.frames import TOKEN_VAR
from modelops_runtime.worker.warm.venvs.store import FINGERPRINT
from support.bundles import make_bundle
from support.cluster import wait_for
from support.seccomp import EXECUTOR, PRELUDE

MODEL = '''
import os, random, sys, time

IMPORTED_IN = os.getpid()   # the process that ran the module's top level
COUNT = 0                   # the planted bug: module state carried between tasks
CACHE = []

def sim(params, seed):
    global COUNT
    COUNT += 1
    CACHE.append(seed)
    return {"count": COUNT, "cache": list(CACHE), "pid": os.getpid(),
            "imported_in": IMPORTED_IN, "random": random.random()}

def where(params, seed):
    open("out.txt", "w").write("x")
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {"cwd": os.getcwd(), "tmpdir": os.environ.get("TMPDIR"), "pid": os.getpid(),
            "token": os.environ.get("%s"), "sid": os.getsid(0), "ppid": os.getppid(),
            "fds": fds, "pdeathsig": _pdeathsig(), **_thread_of_libc()}

def _thread_of_libc():
    """What glibc keeps of this thread: its tid (read back from the CPU clock of
    pthread_self()) and its robust-mutex list as registered with the kernel."""
    import ctypes, threading
    clock = time.pthread_getcpuclockid(threading.get_ident())
    head, size = ctypes.c_void_p(), ctypes.c_size_t()
    nr = {"x86_64": 274, "aarch64": 100}[os.uname().machine]  # get_robust_list
    ctypes.CDLL(None).syscall(nr, 0, ctypes.byref(head), ctypes.byref(size))
    return {"tcb_tid": ~(clock >> 3), "robust_list": bool(head.value)}

def _pdeathsig():
    import ctypes
    sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return sig.value

def escape(params, seed):
    """Attack: write next to its own scratch dir, into the template's (shared by every
    task process it forks)."""
    try:
        open(os.path.join(os.path.dirname(os.getcwd()), "planted.txt"), "w").write("x")
    except OSError as exc:
        return {"escape": type(exc).__name__}
    return {"escape": "written"}

def segfault(params, seed):
    print("about to crash")
    os.kill(os.getpid(), 11)

def quits(params, seed):
    os._exit(7)

def sleeps(params, seed):
    time.sleep(60)

def hog(params, seed):
    CACHE.append(bytearray(params["mb"] << 20))
    time.sleep(30)
    return {}

def boom(params, seed):
    raise ValueError("bad x")

def chatty(params, seed):
    """More output than a pipe holds, while running and at exit (atexit)."""
    import atexit

    def at_exit():
        print("y" * 200_000, flush=True)
        if params.get("done"):  # written once all of it went out
            open(os.path.join(params["done"], str(os.getpid())), "w").close()

    atexit.register(at_exit)
    for i in range(3000):
        print(f"line {i} " + "z" * 100)
    if params.get("fail"):
        raise ValueError("after the output")
    return {"pid": os.getpid()}
''' % TOKEN_VAR

OTHER = '''
import os
IMPORTED_IN = os.getpid()

def run(params, seed):
    return {"imported_in": IMPORTED_IN, "pid": os.getpid()}
'''


def _bundle(tmp_path) -> str:
    return make_bundle(tmp_path / "src", tmp_path / "repo",
                       {"model.py": MODEL, "other.py": OTHER, "requirements.txt": ""},
                       name="t")


def _call(ref, fn="sim", seed=0, module="model", **params):
    return Call(bundle=ref, entrypoint=f"{module}:{fn}", args=(params, seed))


def test_planted_module_global_shows_in_prod_warm_and_not_from_the_template(tmp_path, warm):
    ref = _bundle(tmp_path)
    prod = warm(max_process_reuse=1000)
    assert [prod.run(_call(ref, seed=s)).outputs["count"] for s in range(3)] == [1, 2, 3]

    fresh = warm(max_process_reuse=1)
    results = [fresh.run(_call(ref, seed=s)).outputs for s in range(4)]
    templates = fresh.template_pids()
    assert len(templates) == 1
    # every task starts from the module state of a fresh import, none of an earlier task's
    assert [r["count"] for r in results] == [1, 1, 1, 1]
    assert [r["cache"] for r in results] == [[0], [1], [2], [3]]
    # ... imported by each task process itself (never by the template: its import-time
    # code runs once per task, as in a new interpreter), each task in a process of its own
    assert [r["imported_in"] for r in results] == [r["pid"] for r in results]
    assert len({r["pid"] for r in results}) == 4 and not {r["pid"] for r in results} & set(templates)
    # Python's `random` is reseeded in each forked process
    assert len({r["random"] for r in results}) == 4
    stats = fresh.stats()
    assert stats["removals"]["reuse"] >= 4 and stats["removals"]["crash"] == 0

    # another entrypoint module gets its own template; the first one stays
    other = fresh.run(_call(ref, "run", module="other")).outputs
    assert other["imported_in"] not in fresh.template_pids() and len(fresh.template_pids()) == 2
    assert templates[0] in fresh.template_pids()


def test_a_forked_process_is_its_own_session_with_its_own_pipes_dir_and_mark(tmp_path, warm):
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    first, second = (ex.run(_call(ref, "where")).outputs for _ in range(2))
    assert first["sid"] == first["pid"]            # a session leader: killpg reaches its tree
    assert first["ppid"] == os.getpid()            # the worker's child (CLONE_PARENT)
    assert first["pdeathsig"] == signal.SIGKILL    # armed against the worker's death
    # glibc's own view of its main thread, as after fork(): its tid, not the template's
    # (pthread_setaffinity_np(pthread_self()) must not reach the template), and a robust
    # list registered with the kernel
    assert first["tcb_tid"] == first["pid"] and first["robust_list"], first
    assert first["cwd"] != second["cwd"] and first["tmpdir"] == first["cwd"]
    assert first["token"] and first["token"] != second["token"]
    # stdin, stdout, stderr and its own request, response and lifeline pipes, plus the
    # template's two leases (bundle and venv, kept on purpose: the caches' garbage collector
    # leaves them alone while it runs): nothing else of the template's (its socket, its
    # response pipe, its lifeline)
    assert len(first["fds"]) == len(second["fds"]) and len(first["fds"]) <= 9, first["fds"]
    # removed with the process, or (left empty) kept for a next task process, renamed for
    # it (test_task_dirs.py); the shutdown removes the rest (the fixture checks)
    wait_for(lambda: not os.path.exists(first["cwd"]) or not os.listdir(first["cwd"]), 30,
             "the first task process's scratch removed or emptied")


def _landlock_abi() -> int:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)  # its version


def test_a_forked_process_may_write_only_in_its_own_scratch_dir(tmp_path, warm):
    if _landlock_abi() < 1:
        pytest.skip("this kernel has no Landlock: warm processes run without a sandbox")
    elsewhere = tmp_path / "elsewhere"  # not the test's whole tmp_path (the fixture's)
    elsewhere.mkdir()
    ex = warm(max_process_reuse=1, warm_writable_paths=str(elsewhere))
    ref = _bundle(tmp_path)
    assert ex.run(_call(ref, "escape")).outputs == {"escape": "PermissionError"}
    assert ex.run(_call(ref, "where")).outputs["cwd"]  # its own dir stays writable


@pytest.mark.parametrize("fn, error, check", [
    ("segfault", ProcessCrashed, lambda e: e.signal_name == "SIGSEGV"
     and "about to crash" in e.log_tail),
    ("quits", ProcessCrashed, lambda e: e.exit_code == 7),
], ids=["segfault", "os-exit"])
def test_a_crash_in_a_forked_process_is_typed_and_the_template_survives(tmp_path, warm,
                                                                        fn, error, check):
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    ex.run(_call(ref))
    template = ex.template_pids()
    with pytest.raises(error) as err:
        ex.run(_call(ref, fn))
    assert check(err.value), err.value
    assert ex.template_pids() == template
    assert ex.run(_call(ref)).outputs["count"] == 1
    with pytest.raises(SimulationError, match="bad x"):
        ex.run(_call(ref, "boom"))
    assert ex.template_pids() == template


def test_timeout_and_memory_limit_of_a_forked_process(tmp_path, warm):
    ex = warm(max_process_reuse=1, task_timeout=3, mem_limit_bytes="150Mi")
    ref = _bundle(tmp_path)
    ex.run(_call(ref))
    template = ex.template_pids()
    with pytest.raises(TaskTimeout) as err:
        ex.run(_call(ref, "sleeps"))
    assert err.value.timeout_s == 3
    with pytest.raises(MemoryLimitExceeded):
        ex.run(_call(ref, "hog", mb=400))
    assert ex.template_pids() == template
    assert ex.run(_call(ref)).outputs["count"] == 1
    stats = ex.stats()["removals"]
    assert stats["timeout"] == 1 and stats["mem_limit"] == 1


def test_a_template_whose_venv_is_rebuilt_is_replaced(tmp_path, warm, procs):
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    ex.run(_call(ref))
    (before,) = ex.template_pids()
    old = procs.track(before)
    (next((tmp_path / "venvs").glob("[0-9a-f]*")) / FINGERPRINT).unlink()  # → rebuilt
    ex.run(_call(ref))
    (after,) = ex.template_pids()
    assert after != before
    procs.wait_gone([old])
    assert ex.stats()["removals"]["venv_changed"] == 1


def test_a_dead_template_is_replaced(tmp_path, warm, procs):
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    ex.run(_call(ref))
    (template,) = ex.template_pids()
    os.kill(template, signal.SIGKILL)
    procs.wait_gone([procs.track(template)])
    out = ex.run(_call(ref)).outputs
    assert ex.template_pids() != [template] and out["count"] == 1


def test_exec_keeps_the_plain_path(tmp_path, warm):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path)
    results = [ex.run(_call(ref)).outputs for _ in range(2)]
    assert ex.template_pids() == []
    assert [r["count"] for r in results] == [1, 1]
    assert all(r["imported_in"] == r["pid"] for r in results)  # imported by itself


# -- fresh venvs built ahead (FORCE_FRESH_VENV) --------------------------------------------

PREFIX = '''
import sys

def prefix(params, seed):
    return {"prefix": sys.prefix}
'''


def test_fresh_venvs_are_built_ahead_used_once_and_removed(tmp_path, warm):
    from support.cluster import wait_for

    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"model.py": PREFIX, "requirements.txt": ""}, name="p")
    ex = warm(force_fresh_venv="true", fresh_venvs_ahead=2, fresh_process_from="exec")
    venvs = tmp_path / "venvs"
    prefixes = [ex.run(Call(bundle=ref, entrypoint="model:prefix", args=({}, s)))
                .outputs["prefix"] for s in range(4)]
    assert len(set(prefixes)) == 4  # a venv never used before, every time

    # uv built one pristine venv, never used by a task; every task's venv is a clone of it
    pristine = ex.venvs.pristines.paths()
    assert len(pristine) == 1 and str(pristine[0]) not in prefixes

    def fresh_dirs():
        return sorted(p for p in venvs.iterdir()
                      if p.name.startswith(".fresh-") and p not in pristine)

    # used ones are removed in the background; two wait for the next tasks
    wait_for(lambda: len(fresh_dirs()) == 2 and not set(map(str, fresh_dirs())) & set(prefixes),
             120, "two venvs built ahead and the used ones removed",
             on_fail=lambda: f"left: {fresh_dirs()}")
    ex.shutdown()
    assert fresh_dirs() == [], "venvs built ahead survived the shutdown"
    assert not pristine[0].exists(), "the pristine venv survived the shutdown"


LAZY = '''
import sys

def run(params, seed):
    before = {name: name in sys.modules for name in ("colorsys", "lazyhelper")}
    import colorsys      # a dependency imported on first use (like numpy.random in numpy 2)
    import lazyhelper    # one of the bundle's own modules, imported lazily on purpose
    return {"before": before}
'''


def test_the_template_imports_what_task_processes_imported_but_not_bundle_modules(
        tmp_path, warm):
    """numpy 2 imports numpy.random on first use: a template that imported nothing made
    every task process pay that import (about 18 ms). Modules a task process imported from
    outside the bundle are imported by the template (once its probes found them clean)
    before its next forks; the bundle's own modules never are. numpy itself (its legacy
    RNG reseeded per task) is in tests/runtime/test_fresh_equivalence.py."""
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"lazy.py": LAZY, "lazyhelper.py": "X = 1\n", "requirements.txt": ""},
                      name="lazy")
    ex = warm(max_process_reuse=1)
    runs = [ex.run(_call(ref, "run", seed=s, module="lazy")).outputs for s in range(3)]
    assert runs[0]["before"] == {"colorsys": False, "lazyhelper": False}
    assert [r["before"] for r in runs[1:]] == [{"colorsys": True, "lazyhelper": False}] * 2
    assert ex.stats()["template_fallbacks"] == {"import_side_effects": 0, "state_changed": 0,
                                                "no_subreaper": 0}


@pytest.mark.parametrize("venv", ["cached", "pristine"])
def test_a_worker_process_of_a_later_run_starts_from_an_earlier_plan(
        tmp_path, warm, monkeypatch, caplog, venv):
    """A template plan's key (plans.py) is every input a probe's verdict depends on, with
    a worker process's own places replaced: `local` gives each worker process of each run
    its own TMPDIR (<run>/tmp/worker-<i>, local/cluster/launch.py), its compile caches
    beneath it, and with FORCE_FRESH_VENV (diagnose-fresh-venv) its own pristine build (a
    new name, a new build time). Each was once in the key: no template of a later study
    found its plan, and each worker process paid its probes again (fresh-process SIR: ~0.7
    s of CPU per worker process). Two worker processes of two runs, one after the other,
    share one plan."""
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"lazy.py": LAZY, "lazyhelper.py": "X = 1\n", "requirements.txt": ""},
                      name="lazy")
    settings = {"max_process_reuse": 1}
    if venv == "pristine":
        settings.update(force_fresh_venv="true", fresh_venvs_ahead=0)
    plans = tmp_path / "venvs" / ".template-plans"

    def worker_process_of_run(run: str):
        own = tmp_path / "runs" / run / "tmp" / "worker-0"  # as `local` gives it
        own.mkdir(parents=True)
        monkeypatch.setenv("TMPDIR", str(own))  # what its templates get
        monkeypatch.setattr(tempfile, "tempdir", str(own))  # its compile caches' parent
        return warm(**settings)

    first = worker_process_of_run("one")
    runs = [first.run(_call(ref, "run", seed=s, module="lazy")).outputs for s in range(2)]
    assert [r["before"]["colorsys"] for r in runs] == [False, True]  # learned, plan stored
    pristine = first.venvs.pristines.paths() if venv == "pristine" else []
    first.shutdown()  # its pristine venv goes with it: the next run builds its own
    assert len(list(plans.glob("*.json"))) == 1, "the first run stored no plan"
    second = worker_process_of_run("two")
    with caplog.at_level(logging.INFO, logger="modelops_runtime.pool"):
        outs = [second.run(_call(ref, "run", seed=s, module="lazy")).outputs
                for s in range(2)]
    if venv == "pristine":
        assert second.venvs.pristines.paths() != pristine, "the pristine venv was not rebuilt"
    assert "starts from the plan of an earlier template" in caplog.text
    assert [o["before"] for o in outs] == [{"colorsys": True, "lazyhelper": False}] * 2
    assert len(list(plans.glob("*.json"))) == 1, "the later run stored its own plan"


def test_a_plan_key_replaces_a_worker_process_s_own_places_only_as_whole_paths():
    """Two worker processes' own places (TMPDIR, compile caches) are one placeholder in the
    key wherever they start a path (alone, in PATH-like lists, after "="); inside another
    name they are not theirs: /tmp/ab is no more worker /tmp/a's than /tmp/xb is /tmp/x's,
    and the two keys must differ (one shared them)."""
    def key(own: list[str], env: dict[str, str]) -> str:
        return plan_key(venv_path=Path("/venvs/v"), fingerprint=b"{}", bundle_ref="sha256:b",
                        module="m", runner="r", env=env, per_process=own)

    def env(own: str) -> dict[str, str]:
        return {"TMPDIR": own, "NUMBA_CACHE_DIR": f"{own}/caches/v-b/numba",
                "PATH": f"/venvs/v/bin:{own}/bin:/usr/bin", "FLAGS": f"-Dtmp={own}/x",
                "WRITABLE": f"/marks,{own}/caches/v-b/numba"}

    assert key(["/tmp/a"], {"F": "/tmp/ab"}) != key(["/tmp/x"], {"F": "/tmp/xb"})
    assert key(["/tmp/a"], {"F": "/data/tmp/a"}) != key(["/tmp/x"], {"F": "/data/tmp/x"})
    assert key(["/tmp/a", "/tmp/a/caches"], env("/tmp/a")) == key(
        ["/tmp/x/", "/tmp/x/caches"], env("/tmp/x"))
    assert key(["", "/"], {"F": "/tmp"}) == key([], {"F": "/tmp"})


def test_a_learned_name_that_cannot_be_imported_leaves_the_template_working(tmp_path, warm):
    """A task process reports what is in its sys.modules, including names a model put there
    by hand; the template tries such a name once and goes on forking."""
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"alias.py": ALIAS, "requirements.txt": ""}, name="alias")
    ex = warm(max_process_reuse=1)
    outs = [ex.run(_call(ref, "run", seed=s, module="alias")).outputs for s in range(3)]
    assert [o["had_alias"] for o in outs] == [False, False, False]
    assert len(ex.template_pids()) == 1 and ex.stats()["removals"]["crash"] == 0


ALIAS = '''
import sys, types

def run(params, seed):
    had = "not_a_real_module_xyz" in sys.modules
    sys.modules["not_a_real_module_xyz"] = types.ModuleType("not_a_real_module_xyz")
    return {"had_alias": had}
'''


TAMPER = '''
import os, sys, sysconfig

def run(params, seed):
    site = sysconfig.get_paths()["purelib"]
    planted = os.path.join(site, "planted.pth")
    out = {"prefix": sys.prefix, "had_plant": os.path.exists(planted),
           "cfg": open(os.path.join(sys.prefix, "pyvenv.cfg")).read()}
    for what, path, mode in (("append", os.path.join(sys.prefix, "pyvenv.cfg"), "a"),
                             ("plant", planted, "w")):
        try:
            with open(path, mode) as f:
                f.write("import os; os.environ['PWNED'] = '1'\\n")
            out[what] = "written"
        except OSError as exc:
            out[what] = type(exc).__name__
    return out
'''


@pytest.mark.parametrize("start", ["template", "exec"])
def test_a_task_cannot_change_the_pristine_venv_its_fresh_venv_was_cloned_from(tmp_path, warm,
                                                                               start):
    """Attack: fresh venvs are one pristine uv build per worker process, which task
    processes forked from a template run in (exec'd ones in a hard-link clone of it); a
    task writing into its venv would write into what every later task runs in. Refused."""
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"tamper.py": TAMPER, "requirements.txt": ""}, name="tamper")
    (tmp_path / "marks").mkdir()
    ex = warm(force_fresh_venv="true", fresh_venvs_ahead=0, fresh_process_from=start,
              warm_writable_paths=str(tmp_path / "marks"))  # not the venvs, as in a pod
    first = ex.run(_call(ref, "run", module="tamper")).outputs
    assert (first["append"], first["plant"]) == ("PermissionError", "PermissionError")
    (pristine,) = ex.venvs.pristines.paths()
    second = ex.run(_call(ref, "run", seed=1, module="tamper")).outputs
    assert (second["prefix"] == first["prefix"] == str(pristine)) is (start == "template")
    assert not second["had_plant"]
    assert second["cfg"] == first["cfg"] == (pristine / "pyvenv.cfg").read_text()
    assert not list(pristine.rglob("planted.pth"))


STARTS_A_PROCESS = '''
import os, subprocess
AT_IMPORT = subprocess.run(["/bin/true"]).returncode  # as matplotlib's font cache does

def sim(params, seed):
    return {"at_import": AT_IMPORT, "pid": os.getpid(),
            "in_task": subprocess.run(["/bin/true"]).returncode}
'''


@pytest.mark.parametrize("reuse", [1000, 1], ids=["warm", "fresh-process"])
def test_a_module_starting_a_process_at_import_runs_in_every_mode(tmp_path, warm, reuse):
    """Regression: a fresh-process template that started a process while importing (before
    its hello) waited forever for the signal guard's answer (matplotlib building its font
    cache: "did not answer within 120 s"); a warm process, importing after its hello, ran."""
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"sub.py": STARTS_A_PROCESS, "requirements.txt": ""}, name="sub")
    ex = warm(max_process_reuse=reuse)
    ex.pool.start_timeout = 60  # bounded: a wait for the guard is the bug, not slowness
    outputs = [ex.run(Call(bundle=ref, entrypoint="sub:sim", args=({}, seed))).outputs
               for seed in range(3)]
    assert [(o["at_import"], o["in_task"]) for o in outputs] == [(0, 0)] * 3
    assert len({o["pid"] for o in outputs}) == (1 if reuse > 1 else 3)


# Runs a fresh-process executor inside a seccomp profile that refuses clone(CLONE_PARENT)
# (EPERM), as a stricter profile might: templates then double-fork their task processes.
_NO_CLONE_PARENT = PRELUDE + r'''
clone = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
install_filter([(0x20, 0, 0, 0), (0x15, 0, 3, clone), (0x20, 0, 0, 16), (0x45, 0, 1, 0x8000),
                (0x06, 0, 0, 0x00050000 | 1), (0x06, 0, 0, 0x7FFF0000)])
''' + EXECUTOR + r'''
logging.getLogger("modelops_runtime").setLevel(logging.INFO)
try:
    out = [ex.run(Call(bundle=sys.argv[2], entrypoint=f"model:{fn}", args=({}, 0))).outputs
           for fn in ("where", "sim", "where")]
finally:
    ex.shutdown()
print(json.dumps({"out": out, "me": os.getpid(),
                  "said": [m for m in records if "double-forks" in m]}))
'''


def test_a_template_refused_clone_parent_double_forks_as_before(tmp_path, uv_offline,
                                                                 scratch_root):
    """Where clone(CLONE_PARENT) is refused (a stricter seccomp profile), the template
    falls back to the double fork (a middle process, the worker adopting the task
    process), says so once, and its task processes are the same: the worker's children,
    their own sessions, glibc's view of their thread their own."""
    import json
    import subprocess
    import sys

    ref = _bundle(tmp_path)
    env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
           "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
           "MODELOPS_VENVS_DIR": str(tmp_path / "venvs"), "MODELOPS_MAX_PROCESS_REUSE": "1"}
    proc = subprocess.run([sys.executable, "-c", _NO_CLONE_PARENT, json.dumps(env), ref],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    first, sim, second = result["out"]
    for where in (first, second):
        assert where["ppid"] == result["me"] and where["sid"] == where["pid"], where
        assert where["tcb_tid"] == where["pid"] and where["robust_list"], where
        assert where["pdeathsig"] == signal.SIGKILL
    assert sim["count"] == 1 and sim["imported_in"] == sim["pid"]
    assert len(result["said"]) == 1, result["said"]
    assert "clone(CLONE_PARENT): Operation not permitted" in result["said"][0]


def test_a_forked_process_printing_more_than_a_pipe_holds_is_drained(tmp_path, warm):
    """Nothing drains a forked task process's output but the thread waiting on it (no
    thread of its own): 300 KB while it runs and 200 KB in an atexit handler, more than
    its pipe holds, never block it; the error carries the last of it."""
    ex = warm(max_process_reuse=1)
    ref = _bundle(tmp_path)
    with pytest.raises(SimulationError) as info:
        ex.run(_call(ref, "chatty", fail=True))
    assert "line 2999 " in info.value.log_tail and "after the output" in str(info.value)
    done = tmp_path / "done"  # (the fixture's writable path)
    done.mkdir()
    pids = [ex.run(_call(ref, "chatty", done=str(done))).outputs["pid"] for _ in range(3)]
    wait_for(lambda: sorted(int(p.name) for p in done.iterdir()) == sorted(pids), 60,
             "each task process's atexit output to be drained (else its print blocks)")
