"""Process-wide flags set during a test are cleared after it (support/flags.py): the
child-subreaper flag an in-process warm pool sets (``become_subreaper``) does not outlive
the test, so pytest adopts no later test's orphans; SIGINT ignored by a background start is
not passed on; a SIGTERM to pytest tears down the clusters its tests started."""

from __future__ import annotations

import sys

import pytest

from support.flags import set_subreaper, subreaper

INNER = """
from modelops_runtime.worker.warm.orphans import become_subreaper
from support.flags import subreaper

def test_a_warm_pool_makes_this_process_a_subreaper():
    assert become_subreaper() and subreaper()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the child-subreaper flag is Linux's (prctl)")


def test_the_subreaper_flag_is_cleared_after_the_test_that_set_it(pytester):
    assert subreaper() is False, "this test started as a subreaper: an earlier test leaked it"
    pytester.makepyfile(test_inner=INNER)
    pytester.makeconftest('pytest_plugins = ["support.flags"]\n')
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert subreaper() is False, "the inner test's subreaper flag survived it"

    # without the plugin the flag stays set for the rest of the session (as it did)
    pytester.makeconftest("")
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    try:
        assert subreaper() is True
    finally:
        set_subreaper(False)


SIGINT_INNER = """
import signal, subprocess, sys

def test_a_child_can_be_interrupted():
    child = subprocess.run([sys.executable, "-c",
                            "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "False", "the child starts with SIGINT ignored"
"""


@pytest.mark.parametrize("plugin, passes", [("support.flags", True), (None, False)])
def test_sigint_ignored_by_a_background_start_is_not_passed_on(pytester, plugin, passes):
    """`make test &` in a script starts pytest with SIGINT ignored; with the plugin the
    processes the tests start can be interrupted as from a terminal (the Ctrl-C tests
    failed in a background CI-like run before)."""
    import os
    import subprocess

    pytester.makepyfile(test_inner=SIGINT_INNER)
    pytester.makeconftest(f'pytest_plugins = ["{plugin}"]\n' if plugin else "")
    ignore = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    run = ("import os, sys; os.execv(sys.executable, [sys.executable, '-m', 'pytest', "
           "'-q', '-p', 'no:cacheprovider'])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", ignore + run], cwd=pytester.path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) is passes, proc.stdout[-2000:]


SIGTERM_INNER = """
import importlib.util, json, os, signal
from pathlib import Path

from support.paths import REPO

# the real fixture of tests/conftest.py (by path: another conftest may be first on sys.path)
_spec = importlib.util.spec_from_file_location("tests_conftest", REPO / "tests" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
dask_cluster = _conftest.dask_cluster

def test_holds_a_cluster_until_terminated(dask_cluster):
    cluster, client = dask_cluster()
    pids = sorted(cluster.tree_pids())
    Path(os.environ["INNER_PIDS"]).write_text(json.dumps(pids))
    signal.pause()  # until the outer test's SIGTERM
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_pytest_run_ended_by_a_signal_leaves_no_cluster_behind(pytester, tmp_path, sig):
    """A pytest run ended from outside stops the real Dask cluster a test holds through
    ``dask_cluster``. SIGTERM (CI's timeout, a user's kill): the fixtures' teardown runs
    and has stopped everything when pytest exits, with 143 (support/flags.py). SIGKILL:
    no teardown; the scheduler and the worker get SIGTERM from the kernel as pytest dies
    (support/cluster.py) and close. Before, both left scheduler, nanny and worker running."""
    import json
    import os
    import signal
    import subprocess

    import psutil

    from support.cluster import wait_for

    pytester.makepyfile(test_inner=SIGTERM_INNER)
    pids_file = tmp_path / "pids.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "INNER_PIDS": str(pids_file)}
    inner = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-s", "-p", "support.flags"], cwd=pytester.path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs: list[psutil.Process] = []

    def alive() -> list[psutil.Process]:
        return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    try:
        wait_for(lambda: pids_file.exists() and pids_file.read_text()
                 or inner.poll() is not None, 120, "the inner test to start its cluster")
        assert inner.poll() is None, inner.communicate()[0][-3000:]
        pids = json.loads(pids_file.read_text())
        assert len(pids) >= 3, pids  # scheduler, nanny, worker process
        procs = [psutil.Process(pid) for pid in pids]
        inner.send_signal(getattr(signal, sig))
        out = inner.communicate(timeout=90)[0]
        if sig == "SIGTERM":
            assert inner.returncode == 128 + signal.SIGTERM, out[-3000:]
            assert alive() == [], f"left behind when pytest exited: {alive()}\n{out[-3000:]}"
        else:
            assert inner.returncode == -signal.SIGKILL
            wait_for(lambda: not alive(), 60, "the cluster to end with the SIGKILLed pytest",
                     on_fail=lambda: f"left behind: {alive()}")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait(30)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
