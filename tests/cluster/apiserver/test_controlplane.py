"""The control plane fixture itself: started in a separate Python process that is then
interrupted (Ctrl-C), fails, or is killed outright; afterwards none of its etcd,
kube-apiserver and kube-controller-manager processes runs (checked by pid and start
time) and its state directory is gone (after SIGKILL: once the next session sweeps it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from support import controlplane
from support.cluster import wait_for
from support.paths import TESTS

SCRIPT = """
import json, sys, time
from support.controlplane import ControlPlane
with ControlPlane(with_kcm={kcm}) as cp:
    print(json.dumps({{"root": str(cp.root), "procs": [[p.pid, p.create_time()] for p in cp.pids()],
                      "version": json.loads(cp.version)["gitVersion"]}}), flush=True)
    if {fail}:
        raise RuntimeError("a test failed")
    while True:
        time.sleep(1)
"""


@pytest.fixture
def start(tmp_path):
    reason = controlplane.unavailable()
    if reason:
        pytest.skip(reason)
    started, roots = [], []

    def run(*, kcm: bool, fail: bool = False):
        out = tmp_path / f"out-{len(started)}"
        with out.open("w") as f:
            popen = subprocess.Popen([sys.executable, "-c", SCRIPT.format(kcm=kcm, fail=fail)],
                                     stdout=f, stderr=subprocess.STDOUT, cwd=TESTS,
                                     env={**os.environ, "PYTHONPATH": str(TESTS)},
                                     start_new_session=True)
        started.append(popen)
        line = wait_for(lambda: out.read_text().split("\n", 1)[0] if "\n" in out.read_text()
                        else (popen.poll() is not None and "exited"),
                        controlplane.READY_TIMEOUT + 30, "the control plane to come up",
                        on_fail=out.read_text)
        assert line.startswith("{"), out.read_text()
        info = json.loads(line)
        roots.append(Path(info["root"]))
        procs = []
        for pid, created in info["procs"]:
            p = psutil.Process(pid)
            assert p.create_time() == created
            procs.append(p)
        return popen, info, procs, out

    yield run
    for popen in started:
        if popen.poll() is None:  # a failed test: its children die with it (PDEATHSIG)
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(30)
    for root in roots:  # left only when the script could not finish its own cleanup
        shutil.rmtree(root, ignore_errors=True)


def _gone(procs) -> bool:
    return not controlplane.still_running(procs)


def test_ctrl_c_stops_everything(start):
    popen, info, procs, out = start(kcm=True)
    assert [p.name() for p in procs] == ["etcd", "kube-apiserver", "kube-controller-manager"]
    assert info["version"].startswith("v1.")
    popen.send_signal(signal.SIGINT)
    popen.wait(controlplane.STOP_TIMEOUT)
    assert "KeyboardInterrupt" in out.read_text()
    assert _gone(procs), controlplane.still_running(procs)
    assert not Path(info["root"]).exists()


def test_a_failure_stops_everything(start):
    popen, info, procs, out = start(kcm=False, fail=True)
    assert popen.wait(controlplane.STOP_TIMEOUT) == 1
    assert "RuntimeError: a test failed" in out.read_text()
    assert _gone(procs), controlplane.still_running(procs)
    assert not Path(info["root"]).exists()


def test_sigkill_of_the_test_process_leaves_no_process(start):
    popen, info, procs, _ = start(kcm=False)
    popen.kill()  # no finalizer runs: PR_SET_PDEATHSIG stops the children
    popen.wait(30)
    wait_for(lambda: _gone(procs), 30, "the control plane to die with its parent",
             on_fail=lambda: str(controlplane.still_running(procs)))
    root = Path(info["root"])
    assert (root / "pki" / "ca.key").exists()  # nobody was left to remove it ...
    assert root in controlplane.sweep_stale(root.parent)  # ... until the next session starts
    assert not root.exists()
