"""The leftover check (support/leaks.py, run after every test by support/leakcheck.py)
catches what the runtime's own bookkeeping cannot see: a planted leak -- a ``sleep`` that
starts its own session from a child that lives a few microseconds -- is found by the new
check and missed by the old one (e2e_support's ProcessRecord, sampled every 50 ms)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

import pytest

from modelops_runtime.local.cluster.supervise import ProcessRecord
from support import leakcheck
from support.cluster import wait_for
from support.leaks import MARK_VAR, Scope, marked

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the leftover check reads /proc (Linux)")

# a "CLI" that starts a short-lived child (sh) which leaves `sleep` in a session of its
# own and exits at once; then the CLI itself exits
PLANT = ("import subprocess; subprocess.run(['sh', '-c', 'setsid sleep 300 "
         ">/dev/null 2>&1 </dev/null &'], check=True)")


def _old_check(popen: subprocess.Popen) -> list:
    """What tests/e2e proved "nothing left" with: every descendant of the CLI sampled
    every 50 ms into a ProcessRecord while it runs; then the recorded ones still alive."""
    record, done = ProcessRecord(), threading.Event()

    def watch():
        while not done.is_set():
            record.add_tree(popen.pid, include_root=False)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    popen.wait(60)
    done.set()
    watcher.join(10)
    return record.alive()


def _sleeps(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().split(b"\0")[0] == b"sleep":
                    out.append(pid)
        except OSError:
            pass
    return out


def test_a_planted_leak_is_caught_by_the_new_check_and_missed_by_the_old():
    session = leakcheck.session()
    assert session is not None, "support.leakcheck is not loaded (tests/conftest.py)"
    planted = Scope(session, "planted-leak")
    try:
        with planted.inside():
            assert os.environ[MARK_VAR] == planted.mark
            cli = subprocess.Popen([sys.executable, "-c", PLANT], start_new_session=True)
        assert _old_check(cli) == [], "the old check saw the planted sleep"
        found = wait_for(lambda: _sleeps(planted.leftovers()), 30,
                         "the new check to find the planted sleep")
        (sleep,) = found
        assert os.getsid(sleep) == sleep  # a session of its own: no group signal reaches it
        assert str(sleep) in planted.describe(found) and "sleep 300" in planted.describe(found)
        if session.cgroup is not None:  # held by its cgroup too, whatever its environment
            assert sleep in planted.in_cgroup()
    finally:
        planted.kill()
    assert planted.leftovers() == []


def test_a_file_left_in_the_scopes_tmpdir_is_caught():
    session = leakcheck.session()
    assert session is not None
    scope = Scope(session, "planted-file")
    try:
        with scope.inside():
            subprocess.run([sys.executable, "-c", "import tempfile; "
                            "tempfile.mkstemp(prefix='left-')"], check=True, timeout=60)
        (left,) = scope.leftover_files()
        assert left.startswith("left-")
    finally:
        scope.kill()
    assert not scope.tmp.exists()


def test_a_process_given_a_clean_environment_is_still_held_by_the_cgroup():
    """Warm processes get an allow-listed environment (no mark): the cgroup holds them."""
    session = leakcheck.session()
    if session is None or session.cgroup is None:
        pytest.skip(f"no cgroup for the leftover check here: {session and session.no_cgroup}")
    scope = Scope(session, "planted-clean-env")
    try:
        with scope.inside():
            subprocess.run(["env", "-i", "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 &"],
                           check=True, timeout=60)
        found = wait_for(lambda: _sleeps(scope.in_cgroup()), 30, "the sleep in the cgroup")
        assert _sleeps(scope.leftovers()) == found
    finally:
        scope.kill()
    assert scope.leftovers() == []


LEAKY = """
import subprocess

def test_leaves_a_daemon():
    subprocess.run(['sh', '-c', 'setsid sleep 300 >/dev/null 2>&1 </dev/null &'], check=True)

def test_leaves_a_file():
    subprocess.run(['sh', '-c', 'echo x > "$TMPDIR/forgotten"'], check=True)

def test_clean():
    subprocess.run(['true'], check=True)
"""


def test_a_leaking_test_fails_its_teardown_and_its_leak_is_killed(pytester, monkeypatch):
    """The plugin in a pytest of its own: each leak is one error, saying what was left;
    the clean test passes; nothing of the inner session survives it."""
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeconftest('pytest_plugins = ["support.leakcheck"]\n')
    monkeypatch.setenv("PYTHONPATH", str(Path(leakcheck.__file__).parents[1]))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE")
    out = result.stdout.str()
    result.assert_outcomes(passed=3, errors=2)
    assert "processes left behind" in out and "sleep 300" in out, out
    assert "forgotten" in out, out
    inner = re.search(r"per-test TMPDIR under \S*/modelops-tests-(\S+)", out).group(1)
    assert not marked(f"{MARK_VAR}={inner}/".encode(), prefix=True), "the inner leak survived"
    assert not list(Path(tempfile.gettempdir()).glob(f"modelops-tests-{inner}"))
