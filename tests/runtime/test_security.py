"""The trust boundary, attacked the way bundle code would (docs/security.md).

One real cluster runs the worker unprivileged (support/unprivileged.py): as the tests'
own uid when that is not root; as root, ``setpriv`` makes it ``nobody``, or — when this interpreter lives where nobody
cannot run it (e.g. a pyenv under /root) — root without a single capability (no
CAP_SYS_PTRACE, no CAP_DAC_OVERRIDE: what a uid of its own would take away here). Bundle code in its warm processes tries
to read the worker's and the nanny's environment through /proc, to change another bundle
and the venvs, and to make the worker run code while its reply is decoded. Each attack
must fail with a clear error, and the worker must keep serving.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
from pathlib import Path

import pytest

from modelops_runtime.client import submit
from modelops_runtime.errors import SimulationError
from modelops_runtime.models import SimTask
from support.bundles import make_bundle
from support.unprivileged import unprivileged_cluster

SECRET = "worker-secret-" + hashlib.sha256(os.urandom(8)).hexdigest()[:16]

ATTACKS = '''
import os, pathlib, sys


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _parent(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def environ(params, seed):
    worker = os.getppid()
    with open("/proc/self/status") as fh:
        status = fh.read()
    caps = status.split("CapEff:")[1].split()[0]
    nnp = status.split("NoNewPrivs:")[1].split()[0]
    return {"uid": os.getuid(), "caps": int(caps, 16), "no_new_privs": nnp,
            "own": _environ(os.getpid()),
            "worker": _environ(worker), "nanny": _environ(_parent(worker))}


def _attempt(action, path):
    try:
        os.chmod(path if path.exists() else path.parent, 0o777)  # same uid: mode bits yield
    except OSError:
        pass
    try:
        action(path)
        return "written"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _append(path):
    with open(path, "a") as fh:
        fh.write("# tampered\\n")


def _create(path):
    path.write_text("print('planted')\\n")


def tamper(params, seed):
    victim = pathlib.Path(params["victim"])
    site = next(pathlib.Path(sys.prefix).glob("lib/python*/site-packages"))
    return {
        "other_bundle_file": _attempt(_append, victim / "model.py"),
        "other_bundle_new_file": _attempt(_create, victim / "planted.py"),
        "other_bundle_remove": _attempt(lambda p: p.unlink(), victim / "model.py"),
        "venv_sitecustomize": _attempt(_create, site / "sitecustomize.py"),
        "venv_config": _attempt(_append, pathlib.Path(sys.prefix) / "pyvenv.cfg"),
        # the bundles' compiled files, beside the bundle cache (bundles/bytecode.py)
        "other_bundle_bytecode": _attempt(
            _create, victim.parent / ".bytecode" / victim.name / "model.pyc"),
        "own_bytecode": _attempt(_create, pathlib.Path(__file__).parent.parent / ".bytecode"
                                 / pathlib.Path(__file__).parent.name / "attacks.pyc"),
        "scratch": _attempt(_create, pathlib.Path("mine.txt")),
    }


class Evil:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.mark}",))


def evil_reply(params, seed):
    return {"value": Evil(params["mark"])}


def ok(params, seed):
    return {"seed": seed}


def whoami(params, seed):
    return {"pid": os.getpid()}


def _refused(call):
    try:
        call()
        return "sent"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _syscall(nr, *args):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def signals(params, seed):
    """Every way to signal a process outside the task's own tree, with SIGCONT (harmless
    if it gets through: the point is whether the kernel lets it), and kill(-1) with signal
    0 (a probe: the worker may run as root without capabilities, where -1 means every
    root process of the machine)."""
    import fcntl, signal, subprocess
    nr = {"x86_64": {"tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129},
          "aarch64": {"tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138}}[os.uname().machine]
    worker = os.getppid()
    nanny = _parent(worker)
    thread = max(int(t) for t in os.listdir(f"/proc/{worker}/task"))  # not the leader
    cont = int(signal.SIGCONT)
    out = {
        "kill_worker": _refused(lambda: os.kill(worker, cont)),
        "kill_nanny": _refused(lambda: os.kill(nanny, cont)),
        "kill_worker_thread": _refused(lambda: os.kill(thread, cont)),
        "killpg_worker": _refused(lambda: os.killpg(os.getpgid(worker), cont)),
        "kill_everyone": _refused(lambda: os.kill(-1, 0)),
        "tkill_worker_thread": _refused(lambda: _syscall(nr["tkill"], thread, cont)),
        "tgkill_worker_thread": _refused(lambda: _syscall(nr["tgkill"], worker, thread, cont)),
        "sigqueue_worker": _refused(lambda: _syscall(nr["rt_sigqueueinfo"], worker, cont, None)),
        "pidfd_worker": _refused(lambda: signal.pidfd_send_signal(os.pidfd_open(worker), cont)),
        "setown_worker": _refused(lambda: fcntl.fcntl(os.pipe()[0], fcntl.F_SETOWN, worker)),
    }
    if params.get("victim"):
        out["kill_other_task"] = _refused(lambda: os.kill(params["victim"], signal.SIGKILL))
    # its own tree stays its own to signal: itself, a child, a child's own session
    out["own_process"] = _refused(lambda: os.kill(os.getpid(), signal.SIGWINCH))
    child = subprocess.Popen(["sleep", "60"])
    out["own_child"] = _refused(lambda: os.kill(child.pid, signal.SIGTERM))
    out["own_child_status"] = child.wait()
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    out["own_session"] = _refused(lambda: os.killpg(leader.pid, signal.SIGKILL))
    out["own_session_status"] = leader.wait()
    return out


def _read(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
        return "read"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def plant(params, seed):
    """The victim: a secret in its scratch directory, there while its process idles."""
    secret = pathlib.Path("secret.txt").resolve()
    secret.write_text("the victim's secret")
    return {"secret": str(secret), "pid": os.getpid()}


def peek(params, seed):
    site = next(pathlib.Path(sys.prefix).glob("lib/python*/site-packages"))
    pathlib.Path("mine.txt").write_text("mine")
    out = {name: _read(path) for name, path in params.items()}  # params: scalars only
    out.update(own_bundle=_read(__file__), own_venv=_read(str(site)),
               python_stdlib=_read(os.__file__), system=_read("/etc/passwd"),
               own_scratch=_read("mine.txt"), run_a_program=_refused(
                   lambda: __import__("subprocess").run(["true"], check=True)))
    return out


def trace(params, seed):
    """Another task's warm process: attach to it (which stops it), read its memory."""
    import ctypes
    nr = {"x86_64": {"ptrace": 101, "process_vm_readv": 310},
          "aarch64": {"ptrace": 117, "process_vm_readv": 270}}[os.uname().machine]
    victim = params["victim"]

    def attach():
        _syscall(nr["ptrace"], 16, victim, None, None)  # PTRACE_ATTACH
        _syscall(nr["ptrace"], 17, victim, None, None)  # PTRACE_DETACH (if it got through)

    def read_memory():
        with open(f"/proc/{victim}/maps") as fh:  # same uid: readable
            start = int(fh.readline().split("-")[0], 16)
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        remote = (ctypes.c_void_p * 2)(start, 8)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(nr["process_vm_readv"], victim, local, 1, remote, 1, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return {"ptrace_other_task": _refused(attach),
            "read_other_task_memory": _refused(read_memory)}


def poison(params, seed):
    import signal
    os.kill(os.getppid(), signal.SIGKILL)
    return {"worker": "still there"}


PLACES = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "MPLCONFIGDIR", "JOBLIB_TEMP_FOLDER",
          "NUMBA_CACHE_DIR")


def places(params, seed):
    out = {"cwd": os.getcwd(), "env": {n: os.environ.get(n) for n in PLACES}, "writes": {},
           "others": {}}
    for name in PLACES:
        where = pathlib.Path(os.environ[name])
        where.mkdir(parents=True, exist_ok=True)
        out["writes"][name] = _attempt(_create, where / f"probe-{name}.py")
    for key, path in params.items():  # other tasks' places
        out["others"][key] = _attempt(_create, pathlib.Path(path) / "planted.nbi")
    return out


def write_outside(params, seed):
    pathlib.Path(params["path"], "figure.png").write_bytes(b"not yours")
    return {}
'''

VICTIM = {"model.py": "def ok(params, seed):\n    return {'victim': seed}\n"}


@pytest.fixture(scope="module")
def unprivileged():
    """(cluster, client, root): one `dask worker` (nanny + 1 worker process) running as
    ``nobody`` with SECRET in its environment; caches and TMPDIR under ``root``."""
    with unprivileged_cluster("modelops-security-", {"UV_OFFLINE": "1",
                                                     "MY_SECRET_TOKEN": SECRET},
                              nthreads=2) as started:
        yield started


_studies = itertools.count()


def _run(client, ref, fn, **params):
    (future,) = submit(client, [SimTask(bundle=ref, entrypoint=f"attacks:{fn}", params=params,
                                        seed=1)], study=f"security{next(_studies)}")
    return future.result(timeout=300)


def _bundle(root: Path, name: str, files: dict[str, str]) -> str:
    return make_bundle(root / "src", root / "repo", files, name=name)


def _tree_digest(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest()
                                            if p.is_file() else "dir")
            for p in sorted(path.rglob("*")) if "__pycache__" not in p.parts}


def test_bundle_code_cannot_read_the_worker_or_nanny_environment(unprivileged):
    """Attack: /proc/<ppid>/environ (the worker) and /proc/<its ppid>/environ (the nanny
    and launcher) read from bundle code running as the worker's own unprivileged uid."""
    cluster, client, root, uid = unprivileged
    ref = _bundle(root, "environ", {"attacks.py": ATTACKS})
    out = _run(client, ref, "environ").outputs
    assert (out["uid"], out["caps"], out["no_new_privs"]) == (uid, 0, "1")
    assert "PATH=" in out["own"]  # reading /proc works: the refusals below are the point
    assert SECRET not in out["own"]  # the allow-listed environment
    assert out["worker"] == "refused: PermissionError", out["worker"][:200]
    assert out["nanny"] == "refused: PermissionError", out["nanny"][:200]


def test_bundle_code_cannot_change_other_bundles_or_venvs(unprivileged):
    """Attack: a warm process chmods and writes into another bundle's unpacked directory,
    into the bundles' compiled files (its own and another's: later tasks load them) and
    into the (shared) venv it runs in; only its own scratch directory is writable."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim", VICTIM)
    (future,) = submit(client, [SimTask(bundle=victim_ref, entrypoint="model:ok", params={},
                                        seed=3)], study=f"security{next(_studies)}")
    assert future.result(timeout=300).outputs == {"victim": 3}
    victim_dir = root / "cache" / "bundles" / victim_ref.split(":", 1)[1]
    venvs = root / "cache" / "venvs"
    compiled = root / "cache" / "bundles" / ".bytecode"
    assert (compiled / victim_dir.name / "model.pyc").is_file()
    before = (_tree_digest(victim_dir), _tree_digest(venvs))

    ref = _bundle(root, "tamper", {"attacks.py": ATTACKS})
    out = _run(client, ref, "tamper", victim=str(victim_dir)).outputs
    assert out == {"other_bundle_file": "refused: PermissionError",
                   "other_bundle_new_file": "refused: PermissionError",
                   "other_bundle_remove": "refused: PermissionError",
                   "venv_sitecustomize": "refused: PermissionError",
                   "venv_config": "refused: PermissionError",
                   "other_bundle_bytecode": "refused: PermissionError",
                   "own_bytecode": "refused: PermissionError",
                   "scratch": "written"}
    assert (_tree_digest(victim_dir), _tree_digest(venvs)) == before
    assert sorted(p.name for p in (compiled / victim_dir.name).iterdir()) == ["model.pyc"]
    own = (compiled / ref.split(":", 1)[1] / "attacks.pyc").read_bytes()
    assert own[:4] == importlib.util.MAGIC_NUMBER  # still the worker's compiled file
    # the victim still runs, unchanged
    (future,) = submit(client, [SimTask(bundle=victim_ref, entrypoint="model:ok", params={},
                                        seed=4)], study=f"security{next(_studies)}")
    assert future.result(timeout=300).outputs == {"victim": 4}


def test_a_malicious_reduce_in_a_reply_never_runs_in_the_worker(unprivileged):
    """Attack: a result whose __reduce__ calls os.system when the worker unpickles it."""
    cluster, client, root, uid = unprivileged
    ref = _bundle(root, "evil", {"attacks.py": ATTACKS})
    mark = root / "tmp" / "pwned"
    with pytest.raises(SimulationError) as info:
        _run(client, ref, "evil_reply", mark=str(mark))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert "posix.system" in message and "does not unpickle" in message, message
    assert not mark.exists(), "the worker ran the reply's __reduce__"
    assert _run(client, ref, "ok").outputs == {"seed": 1}  # the worker keeps serving


def test_bundle_code_cannot_signal_the_worker_the_nanny_or_other_tasks(unprivileged):
    """Attack: signals to everything outside the task's own process tree -- the worker
    (its pid, a thread of it, its group), the nanny, every process (-1), another bundle's
    warm process -- by kill, killpg, tkill, tgkill, rt_sigqueueinfo, pidfd_send_signal and
    fcntl(F_SETOWN). Each is refused; signalling its own children still works."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim-signals", {"attacks.py": ATTACKS,  # another bundle:
                                                  "victim.txt": "another warm process"})
    victim = _run(client, victim_ref, "whoami").outputs["pid"]
    ref = _bundle(root, "signals", {"attacks.py": ATTACKS})
    out = _run(client, ref, "signals", victim=victim).outputs
    refused = "refused: PermissionError"
    assert out == {
        "kill_worker": refused, "kill_nanny": refused, "kill_worker_thread": refused,
        "killpg_worker": refused, "kill_everyone": refused, "tkill_worker_thread": refused,
        "tgkill_worker_thread": refused, "sigqueue_worker": refused, "pidfd_worker": refused,
        "setown_worker": refused, "kill_other_task": refused,
        "own_process": "sent", "own_child": "sent", "own_child_status": -15,
        "own_session": "sent", "own_session_status": -9}, out
    assert _run(client, victim_ref, "whoami").outputs["pid"] == victim  # never signalled


def test_a_poison_task_cannot_kill_its_worker(unprivileged):
    """The issue's row: ``os.kill(os.getppid(), SIGKILL)`` killed the worker again and again
    until Dask gave up, and the 5 innocent tasks queued there ended KilledWorker. Now the
    poison task alone fails (PermissionError), the innocent ones run on the same worker."""
    cluster, client, root, uid = unprivileged
    ref = _bundle(root, "poison", {"attacks.py": ATTACKS})
    workers = set(client.scheduler_info()["workers"])
    tasks = [SimTask(bundle=ref, entrypoint="attacks:poison", params={}, seed=0)]
    tasks += [SimTask(bundle=ref, entrypoint="attacks:ok", params={}, seed=s) for s in range(5)]
    futures = submit(client, tasks, study=f"security{next(_studies)}")
    with pytest.raises(SimulationError) as info:
        futures[0].result(timeout=300)
    assert "PermissionError" in str(info.value), info.value
    assert [f.result(timeout=300).outputs for f in futures[1:]] == [
        {"seed": s} for s in range(5)]
    assert set(client.scheduler_info()["workers"]) == workers  # the same worker, never lost


def test_bundle_code_cannot_read_other_tasks_bundles_or_the_worker_state(unprivileged):
    """Attack: a task reads another running task's scratch directory (directly and through
    /proc/<pid>/cwd), another bundle's unpacked tree, the bundle and venv caches, the
    worker's Dask directory and its log -- all readable by mode to the same uid. It still
    reads its own scratch, bundle and venv, the Python installation and /etc."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim-reads", {"attacks.py": ATTACKS,  # another bundle
                                                "victim.txt": "another warm process"})
    victim = _run(client, victim_ref, "plant").outputs
    cache = root / "cache"
    victim_dir = cache / "bundles" / victim_ref.split(":", 1)[1]
    paths = {"other_scratch": victim["secret"],
             "other_scratch_via_proc": f"/proc/{victim['pid']}/cwd/secret.txt",
             "scratch_root": str(root / "tmp"),
             "other_bundle": str(victim_dir / "attacks.py"),
             "bundle_cache": str(cache / "bundles"), "venv_cache": str(cache / "venvs"),
             "worker_space": str(root / "dask-worker-space-0"),
             "worker_log": str(root / "worker-0.log")}
    assert all(os.path.exists(p) for p in paths.values() if not p.startswith("/proc"))
    ref = _bundle(root, "peek", {"attacks.py": ATTACKS})
    out = _run(client, ref, "peek", **paths).outputs
    refused = "refused: PermissionError"
    assert out == {**{name: refused for name in paths}, "own_bundle": "read",
                   "own_venv": "read", "python_stdlib": "read", "system": "read",
                   "own_scratch": "read", "run_a_program": "sent"}, out
    assert _run(client, victim_ref, "whoami").outputs["pid"] == victim["pid"]


def test_bundle_code_cannot_trace_or_read_another_tasks_process(unprivileged):
    """Attack: PTRACE_ATTACH (it stops the target) and process_vm_readv on another bundle's
    warm process -- same uid and dumpable, so only Yama (absent on some kernels) would
    refuse them."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim-trace", {"attacks.py": ATTACKS,  # another bundle
                                                "victim.txt": "another warm process"})
    victim = _run(client, victim_ref, "whoami").outputs["pid"]
    ref = _bundle(root, "trace", {"attacks.py": ATTACKS})
    out = _run(client, ref, "trace", victim=victim).outputs
    assert out == {"ptrace_other_task": "refused: PermissionError",
                   "read_other_task_memory": "refused: PermissionError"}, out
    assert _run(client, victim_ref, "whoami").outputs["pid"] == victim


def test_the_runtime_places_are_writable_and_no_other_tasks(unprivileged):
    """HOME, TMPDIR, the caches of scientific packages (XDG_CACHE_HOME, MPLCONFIGDIR,
    joblib's temp folder) are the task process's own scratch; NUMBA_CACHE_DIR is the compile
    cache of its venv and bundle, outside the venv and the bundle. Attack: write into
    another bundle's compile cache (same venv: no dependencies) and into another warm
    process's HOME."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "placesvictim", {"attacks.py": ATTACKS, "who.py": "WHO = 1\n"})
    victim = _run(client, victim_ref, "places").outputs
    ref = _bundle(root, "places", {"attacks.py": ATTACKS})
    others = {"victim_numba": victim["env"]["NUMBA_CACHE_DIR"], "victim_home": victim["env"]["HOME"]}
    out = _run(client, ref, "places", **others).outputs

    assert out["writes"] == dict.fromkeys(out["env"], "written"), out
    scratch = out["cwd"]
    for name, path in out["env"].items():
        inside = path == scratch or path.startswith(scratch + "/")
        assert inside == (name != "NUMBA_CACHE_DIR"), (name, path, scratch)
    numba = Path(out["env"]["NUMBA_CACHE_DIR"])
    assert numba != Path(others["victim_numba"])
    for shared in (root / "cache" / "venvs", root / "cache" / "bundles"):
        assert shared not in numba.parents, numba
    assert out["others"] == {"victim_numba": "refused: PermissionError",
                             "victim_home": "refused: PermissionError"}, out["others"]
    assert not (Path(others["victim_numba"]) / "planted.nbi").exists()
    # the victim's compile cache and HOME still serve it
    assert _run(client, victim_ref, "places").outputs["writes"] == victim["writes"]


def test_a_refused_write_reads_as_one_line_naming_the_path_and_the_value(unprivileged):
    """A model writing outside every writable place: the error's first line names the path
    and worker.executor.writablePaths, not only a traceback."""
    cluster, client, root, uid = unprivileged
    elsewhere = root / "elsewhere"  # readable by mode, outside the sandbox's roots
    elsewhere.mkdir(exist_ok=True)
    ref = _bundle(root, "outside", {"attacks.py": ATTACKS})
    with pytest.raises(SimulationError) as info:
        _run(client, ref, "write_outside", path=str(elsewhere))
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"attacks:write_outside failed: writing {elsewhere}/figure.png "
                            "was refused (PermissionError: "), first
    assert "add it to worker.executor.writablePaths" in first, first
    assert not (elsewhere / "figure.png").exists()


def test_a_refused_write_into_the_bundle_cache_says_it_is_read_only_by_design(unprivileged):
    """A model writing next to another bundle, in the bundle cache: the first line names the
    bundle cache as read-only by design, and never advises writablePaths (which must never
    hold the bundle cache). Before, it advised adding the bundle's directory to it."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim", VICTIM)
    (future,) = submit(client, [SimTask(bundle=victim_ref, entrypoint="model:ok", params={},
                                        seed=5)], study=f"security{next(_studies)}")
    future.result(timeout=300)
    cache = root / "cache" / "bundles"
    victim_dir = cache / victim_ref.split(":", 1)[1]
    ref = _bundle(root, "outside", {"attacks.py": ATTACKS})
    with pytest.raises(SimulationError) as info:
        _run(client, ref, "write_outside", path=str(victim_dir))
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"attacks:write_outside failed: writing {victim_dir}/figure.png "
                            "was refused (PermissionError: "), first
    assert f"it is in the bundle cache ({cache}), read-only by design" in first, first
    assert "add it to" not in first, first
    assert not (victim_dir / "figure.png").exists()
