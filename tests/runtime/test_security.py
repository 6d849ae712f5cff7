"""The trust boundary, attacked the way bundle code would (README "Security").

One real cluster runs the worker unprivileged: as the tests' own uid when that is not root;
as root, ``setpriv`` makes it ``nobody``, or — when this interpreter lives where nobody
cannot run it (e.g. a pyenv under /root) — root without a single capability (no
CAP_SYS_PTRACE, no CAP_DAC_OVERRIDE: what a uid of its own would take away here). Bundle code in its warm processes tries
to read the worker's and the nanny's environment through /proc, to change another bundle
and the venvs, and to make the worker run code while its reply is decoded. Each attack
must fail with a clear error, and the worker must keep serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from modelops_runtime.client import submit
from modelops_runtime.errors import SimulationError
from modelops_runtime.models import SimTask
from support.bundles import make_bundle
from support.cluster import ProcessCluster, base_env

NOBODY = 65534
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
'''

VICTIM = {"model.py": "def ok(params, seed):\n    return {'victim': seed}\n"}


def _unprivileged() -> tuple[list[str], int]:
    """(command prefix, uid): how the worker runs without privileges (see the docstring)."""
    if os.geteuid() != 0:
        return [], os.geteuid()  # already unprivileged
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot start the worker "
                    "without privileges")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    # the same interpreter must start for nobody, also as a child (dask spawns processes)
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c",
         f"import sys, subprocess; assert sys.version_info[:3] == {tuple(sys.version_info[:3])}; "
         "subprocess.run([sys.executable, '-c', 'import modelops_runtime'], check=True)"],
        capture_output=True, timeout=120, cwd="/")
    if probe.returncode == 0:
        return as_nobody, NOBODY
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"], 0


@pytest.fixture(scope="module")
def unprivileged():
    """(cluster, client, root): one `dask worker` (nanny + 1 worker process) running as
    ``nobody`` with SECRET in its environment; caches and TMPDIR under ``root``."""
    wrap, uid = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="modelops-security-"))  # /tmp: nobody can reach it
    cluster = client = None
    try:
        os.chmod(root, 0o755)
        for sub in ("tmp", "repo", "cache", "dask-worker-space-0"):
            (root / sub).mkdir()
        for sub in ("tmp", "cache", "dask-worker-space-0"):
            os.chown(root / sub, uid, uid)
        env = base_env(root / "cache", {
            "MODELOPS_BUNDLE_REPO": str(root / "repo"), "TMPDIR": str(root / "tmp"),
            "UV_OFFLINE": "1", "UV_NO_INDEX": "1", "MY_SECRET_TOKEN": SECRET,
            "HOME": str(root / "tmp")})
        cluster = ProcessCluster(root=root, env=env)
        cluster.start_scheduler()
        cluster.start_worker(nworkers=1, nthreads=2, wrap=wrap)
        client = cluster.client()
        cluster.wait_for_workers(client, 1)
        yield cluster, client, root, uid
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


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
    """Attack: a warm process chmods and writes into another bundle's unpacked directory
    and into the (shared) venv it runs in; only its own scratch directory is writable."""
    cluster, client, root, uid = unprivileged
    victim_ref = _bundle(root, "victim", VICTIM)
    (future,) = submit(client, [SimTask(bundle=victim_ref, entrypoint="model:ok", params={},
                                        seed=3)], study=f"security{next(_studies)}")
    assert future.result(timeout=300).outputs == {"victim": 3}
    victim_dir = root / "cache" / "bundles" / victim_ref.split(":", 1)[1]
    venvs = root / "cache" / "venvs"
    before = (_tree_digest(victim_dir), _tree_digest(venvs))

    ref = _bundle(root, "tamper", {"attacks.py": ATTACKS})
    out = _run(client, ref, "tamper", victim=str(victim_dir)).outputs
    assert out == {"other_bundle_file": "refused: PermissionError",
                   "other_bundle_new_file": "refused: PermissionError",
                   "other_bundle_remove": "refused: PermissionError",
                   "venv_sitecustomize": "refused: PermissionError",
                   "venv_config": "refused: PermissionError",
                   "scratch": "written"}
    assert (_tree_digest(victim_dir), _tree_digest(venvs)) == before
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
