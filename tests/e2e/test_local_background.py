"""`modelops-runtime local up | run | status | down`: a real local cluster from the rendered
chart kept up in the background between studies, run as a user runs it (the real CLI in
its own session), stopped by `down`, by a killed `up`, or found stale after its supervisor
died; every process it ever had is recorded here by pid and start time and must be gone."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest

from e2e_support import STUDY, preset
from modelops_runtime.local.cluster.state import ClusterState, write_state
from modelops_runtime.local.cluster.supervise import ProcessRecord
from support.cluster import wait_for

FIRST_SEED = 100   # sir_study/study.yaml


def _state(state_dir) -> dict | None:
    try:
        return json.loads((state_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        return None


class TreeWatch:
    """Records every descendant of a pid (and the pid) until stopped: what a supervisor
    that outlives its `up` starts, seen from outside the code under test."""

    def __init__(self, pid: int) -> None:
        self.pid, self.record, self.done = pid, ProcessRecord(), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.is_set():
            self.record.add_tree(self.pid)
            time.sleep(0.05)

    def stop(self) -> list[psutil.Process]:
        self.done.set()
        self.thread.join(5)
        deadline = time.monotonic() + 15  # reaping by init is asynchronous
        while (left := self.record.alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


def _cleanup(watch: TreeWatch) -> None:
    for p in watch.stop():
        p.kill()


def _check(data, reference, sims):
    assert [s["seed"] for s in data["sims"]] == list(range(FIRST_SEED, FIRST_SEED + sims))
    for s in data["sims"]:
        assert s["result"]["outputs"] == reference(s["seed"])


def test_up_run_run_status_down(local_cli, local_env, reference, tmp_path):
    state = tmp_path / "state"
    env = local_env()
    p = preset("prod-warm")
    up = local_cli.run(["up", "-f", p.file, "--state-dir", state], env, timeout=300)
    assert up.popen.returncode == 0, up.output
    assert "cluster is up in the background: scheduler tcp://127.0.0.1:" in up.stdout
    assert f"modelops-runtime local run --state-dir {state} --study DIR" in up.stdout
    record = _state(state)
    assert record["status"] == "up"
    watch = TreeWatch(record["supervisor_pid"])
    try:
        again = local_cli.run(["up", "-f", p.file, "--state-dir", state], env)
        assert again.popen.returncode == 1
        assert f"a local cluster is already up in {state}" in again.stderr

        datas = []
        for i in (1, 2):  # the edit-run loop: the same cluster, no new start
            results = tmp_path / f"run{i}.json"
            run = local_cli.run(["run", "--study", STUDY, "--sims", 12, "--results", results,
                                 "--state-dir", state, "--no-progress"], env)
            assert run.popen.returncode == 0, run.output
            assert f"local cluster: {record['address']} (up since" in run.stdout
            assert "sims: 12 ok, 0 failed" in run.stdout and "batch plan:" in run.stdout
            data = json.loads(results.read_text())
            _check(data, reference, 12)
            datas.append(data)
        assert datas[0]["worker_pids"] == datas[1]["worker_pids"], "the cluster was restarted"
        assert len(datas[0]["worker_pids"]) == p.worker_processes
        second = datas[1]["pool_stats"]
        assert second["venv_cache_misses"] == 0      # the venv built by the first run
        warm_pids = {s["result"]["pid"] for s in datas[0]["sims"]}
        assert warm_pids & {s["result"]["pid"] for s in datas[1]["sims"]}, \
            "the second run found no warm process of the first"

        status = local_cli.run(["status", "--state-dir", state], env)
        assert status.popen.returncode == 0, status.output
        assert (f"workers: {p.worker_processes} of {p.worker_processes} Dask worker "
                "processes connected") in status.stdout
        assert "mode: executor=isolated_warm" in status.stdout

        down = local_cli.run(["down", "--state-dir", state], env, timeout=120)
        assert down.popen.returncode == 0, down.output
        assert "stopped; every local process is gone" in down.stdout
        left = watch.stop()
        assert len(watch.record.seen()) > 2 + p.worker_processes
        assert not left, [p.cmdline()[:3] for p in left]
        assert _state(state) is None
        assert not list(state.glob("runs/*/tmp")) and not list(state.glob("runs/*/dask"))
        after = local_cli.run(["status", "--state-dir", state], env)
        assert after.popen.returncode == 1 and "no local cluster is up" in after.stdout
        gone = local_cli.run(["down", "--state-dir", state], env)
        assert gone.popen.returncode == 0 and "nothing to stop" in gone.stdout
    finally:
        _cleanup(watch)


def test_a_killed_up_leaves_nothing_behind(local_cli, local_env, tmp_path):
    """SIGKILL of `up` while its cluster starts: the supervisor sees its pipe close before
    the handover and stops everything it started."""
    state = tmp_path / "state"
    up = local_cli.start(["up", "-f", preset("prod-warm").file, "--state-dir", state],
                         local_env())
    wait_for(lambda: (_state(state) or {}).get("status") == "starting", 120,
             "the supervisor to record its cluster as starting")
    watch = TreeWatch(_state(state)["supervisor_pid"])
    try:
        wait_for(lambda: len(watch.record.seen()) >= 2, 60, "the scheduler to start")
        os.kill(up.popen.pid, signal.SIGKILL)
        up.wait(30)
        wait_for(lambda: _state(state) is None, 120, "the supervisor to remove its record")
        left = watch.stop()
        assert not left, [p.cmdline()[:3] for p in left]
        status = local_cli.run(["status", "--state-dir", state], local_env())
        assert status.popen.returncode == 1 and "no local cluster is up" in status.stdout
        assert "stale" not in status.stdout  # it cleaned up after itself
    finally:
        _cleanup(watch)


def test_a_crashed_supervisor_is_found_stale_and_its_cluster_removed(local_cli, local_env,
                                                                      tmp_path):
    """The supervisor SIGKILLed (a crash): its scheduler, workers and warm processes still
    run; the next `status` (or run/up/down) finds the record stale and kills them."""
    state = tmp_path / "state"
    env = local_env()
    up = local_cli.run(["up", "-f", preset("prod-warm").file, "--state-dir", state], env,
                       timeout=300)
    assert up.popen.returncode == 0, up.output
    pid = _state(state)["supervisor_pid"]
    watch = TreeWatch(pid)
    try:
        wait_for(lambda: len(watch.record.seen()) > 3, 30, "the cluster's processes")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or
                 psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30, "the supervisor gone")
        assert len(watch.record.alive()) > 1, "the cluster did not outlive its supervisor"
        status = local_cli.run(["status", "--state-dir", state], env)
        assert status.popen.returncode == 1, status.output
        assert f"removed a stale local cluster record in {state}" in status.stdout
        assert "no local cluster is up" in status.stdout
        left = watch.stop()
        assert not left, [p.cmdline()[:3] for p in left]
        assert _state(state) is None
        run = local_cli.run(["run", "--study", STUDY, "--state-dir", state], env)
        assert run.popen.returncode == 1
        assert f"no local cluster is up in {state}; start one with" in run.stderr
    finally:
        _cleanup(watch)


def test_a_record_from_before_a_reboot_is_removed_and_kills_nothing(local_cli, local_env,
                                                                     tmp_path):
    """After a reboot the record names pids that now belong to other processes (here: this
    test's own): their start times differ, so nothing is killed; the record goes."""
    state = tmp_path / "state"
    run_dir = state / "runs" / "old"
    (run_dir / "tmp").mkdir(parents=True)
    me = os.getpid()
    write_state(state, ClusterState(status="up", supervisor_pid=me,
                                    launch_file=run_dir / "launch.json", run_dir=run_dir,
                                    log=run_dir / "cluster.log", started=1.0,
                                    address="tcp://127.0.0.1:1",
                                    procs={me: 12345.0, os.getppid(): 12345.0}))
    (state / "cluster.lock").touch()
    env = local_env()
    down = local_cli.run(["down", "--state-dir", state], env)
    assert down.popen.returncode == 0, down.output
    assert "removed a stale local cluster record" in down.stdout
    assert "nothing to stop" in down.stdout
    assert _state(state) is None and not (run_dir / "tmp").exists()
    assert psutil.pid_exists(me)


@pytest.mark.parametrize("args, message", [
    (["run", "-f", "values.yaml", "--study", "x"],
     "`local run` does not take --values: local up does"),
    (["up", "--study", "x"], "`local up` does not take --study: local run does"),
    (["status", "--keep"], "`local status` does not take --keep"),
    (["run"], "`local run` needs --study PATH"),
])
def test_an_action_refuses_flags_of_another(args, message, local_cli, local_env, tmp_path):
    r = local_cli.run([*args, "--state-dir", tmp_path / "state"], local_env())
    assert r.popen.returncode == 2, r.output
    assert message in r.stderr
    assert not (tmp_path / "state").exists()
