"""Orphans of warm processes, adopted by this process (the worker side: a child subreaper)
and reaped once they exit by themselves, without ever taking the exit status of a process
someone else waits for. Real bundles in real warm processes, real daemons, real Popen
children of this process; the pool's own housekeeper does the reaping."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading

import pytest

from modelops_runtime.client import gather_study, submit
from modelops_runtime.errors import ProcessCrashed
from modelops_runtime.models import Call, SimTask
from support.bundles import make_bundle
from support.cluster import wait_for
from support.wheels import wheelhouse  # noqa: F401 - fixture
from test_warm_cluster import _env
from test_warm_pool import _bundle

# a daemon started by the model: fork; setsid in the middle process ("middle": the daemon
# is in a third session) or in the daemon itself ("daemon": it leads its own session, as a
# Popen(start_new_session=True) child does); the middle exits, so the daemon is an orphan.
# It exits by itself once the flag file exists (bounded: 120 s). With "escape", the model
# first tries to turn off its warm process's subreaper bit, which the signal guard refuses
# (runner/confine.py): the daemon stays in its warm process's tree and ends with its task.
DAEMONS = '''
import ctypes, os, time

def daemon(params, seed):
    if params.get("escape"):
        ctypes.CDLL(None).prctl(36, 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER off
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            if params["setsid"] == "middle":
                os.setsid()
            if os.fork() == 0:
                if params["setsid"] == "daemon":
                    os.setsid()
                os.write(w, os.getpid().to_bytes(4, "big"))
                deadline = time.monotonic() + 120
                while not os.path.exists(params["flag"]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                os._exit(0)
        finally:
            os._exit(0)
    os.close(w)
    pid = int.from_bytes(os.read(r, 4), "big")
    os.waitpid(middle, 0)  # the daemon is adopted by the worker once the middle is gone
    return {"daemon": pid, "sid": os.getsid(pid), "mine": os.getpid()}

def exits(params, seed):
    os._exit(params["code"])
'''


def _children(pid: int | None = None) -> list[int]:
    out = []
    for path in glob.glob(f"/proc/{pid or os.getpid()}/task/*/children"):
        try:
            with open(path) as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return out


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def _zombies(pid: int | None = None) -> set[int]:
    """Zombie children of this process (or of ``pid``) now."""
    return {child for child in _children(pid) if _state(child) == "Z"}


def _exited_popen(*args, **kwargs) -> subprocess.Popen:
    """A real Popen child of this process that has exited but is not waited for yet."""
    popen = subprocess.Popen([sys.executable, "-c", *args], **kwargs)
    wait_for(lambda: _state(popen.pid) == "Z", 60, f"Popen child {popen.pid} to exit")
    return popen


@pytest.mark.parametrize("setsid", ["middle", "daemon"])
def test_an_orphan_that_exits_by_itself_is_reaped_and_popen_keeps_its_status(tmp_path, warm,
                                                                              setsid):
    ex = warm()
    ref = _bundle(tmp_path, extra={"daemons.py": DAEMONS})
    before = _zombies()
    flag = tmp_path / "flag"
    out = ex.run(Call(bundle=ref, entrypoint="daemons:daemon",
                      args=({"flag": str(flag), "setsid": setsid, "escape": True}, 0))).outputs
    daemon = out["daemon"]  # ended with its task (its warm process reaps it)
    assert out["sid"] != os.getsid(0) and (out["sid"] == daemon) == (setsid == "daemon")
    ex.pool.housekeep()  # a sweep sees it alive (with its warm process's mark)
    # real Popen children of this process, exited and not yet waited for: in our session,
    # and in a session of their own
    plain = _exited_popen("raise SystemExit(7)")
    leader = _exited_popen("raise SystemExit(5)", start_new_session=True)
    flag.touch()
    wait_for(lambda: daemon not in _children(), 60,
             f"the daemon {daemon}, exited by itself, to be reaped by the pool's housekeeper",
             on_fail=lambda: f"zombie children: {sorted(_zombies() - before)}")
    for _ in range(3):  # sweeps while the Popen children are zombies
        ex.pool.housekeep()
    assert plain.wait(10) == 7 and leader.wait(10) == 5
    assert not _zombies() - before, f"zombies left: {sorted(_zombies() - before)}"
    assert ex.run(Call(bundle=ref, entrypoint="model:sim", args=({}, 0))).pid == out["mine"]


def test_an_orphan_killed_with_its_warm_process_is_reaped(tmp_path, warm, procs):
    ex = warm(max_process_reuse=1, fresh_process_from="exec")
    ref = _bundle(tmp_path, extra={"daemons.py": DAEMONS})
    before = _zombies()
    out = ex.run(Call(bundle=ref, entrypoint="daemons:daemon",
                      args=({"flag": str(tmp_path / "never"), "setsid": "daemon"}, 0))).outputs
    wait_for(lambda: ex.warm_pids() == [], 60, "the retired process to be stopped")
    procs.wait_gone([out["daemon"]], 30)
    assert out["daemon"] not in _children() and not _zombies() - before, \
        f"zombies left: {sorted(_zombies() - before)}"


def test_forked_task_processes_keep_their_exit_status_while_orphans_are_swept(tmp_path, warm):
    """A task process forked from a template is adopted on purpose: the pool reads its exit
    status for the error; sweeping never takes it, not even before its setsid()."""
    ex = warm(max_process_reuse=1, fresh_process_from="template")
    ref = _bundle(tmp_path, extra={"daemons.py": DAEMONS})
    stop = threading.Event()

    def sweeper():
        while not stop.is_set():
            ex.pool.housekeep()

    thread = threading.Thread(target=sweeper, daemon=True)
    thread.start()
    try:
        for code in (3, 4, 5, 6):
            with pytest.raises(ProcessCrashed) as err:
                ex.run(Call(bundle=ref, entrypoint="daemons:exits", args=({"code": code}, 0)))
            assert err.value.exit_code == code, str(err.value)
    finally:
        stop.set()
        thread.join(30)
    assert ex.template_pids(), "the tasks did not run from a template"


def test_a_dask_worker_keeps_no_zombies_of_daemons_its_tasks_started(dask_cluster, tmp_path,
                                                                    wheelhouse):  # noqa: F811
    """The bug as a user sees it: a long-lived worker process piles up a zombie per daemon
    that its tasks started and that has exited (every one a pid-table entry)."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path / "src", repo, {"daemons.py": DAEMONS, "requirements.txt": ""},
                      name="daemons")
    flag = tmp_path / "flag"
    flag.touch()  # each daemon exits at once, by itself
    cluster, client = dask_cluster(_env(repo, wheelhouse), nthreads=2)
    futures = submit(client, [SimTask(bundle=ref, entrypoint="daemons:daemon",
                                      params={"flag": str(flag), "setsid": "middle"}, seed=s)
                              for s in range(20)], study="daemons")
    study = gather_study(client, futures, progress=False)
    assert study.ok, [f.message for f in study.failures[:3]]
    ((_, worker),) = client.run(os.getpid).items()
    daemons = {r.outputs["daemon"] for r in study.results}
    assert len(daemons) == 20
    wait_for(lambda: not _zombies(worker), 60,
             f"worker process {worker} to reap the daemons its tasks started",
             on_fail=lambda: f"zombie children: {sorted(_zombies(worker))} "
                             f"(daemons: {sorted(daemons & _zombies(worker))})")
