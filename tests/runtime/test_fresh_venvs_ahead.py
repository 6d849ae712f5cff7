"""Fresh venvs built ahead (worker/warm/venvs/prefetch.py) with real uv builds: closing while
builds are in flight, and the store's budget; and a uv build that times out."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from modelops_runtime.bundles.cache import tree_bytes
from modelops_runtime.client import submit
from modelops_runtime.errors import EnvironmentBuildError, WorkerStopping
from modelops_runtime.models import SimTask
from modelops_runtime.worker.warm.venvs.prefetch import FreshVenvs
from modelops_runtime.worker.warm.venvs.store import VenvCache
from support.bundles import make_bundle
from support.cluster import tail, wait_for
from support.index import HeldIndex

REQS = ["tinylib==1.0"]


@pytest.fixture
def stalling_index(monkeypatch, tmp_path):
    index = HeldIndex()  # no wheels: answers 404 once released
    for name in ("UV_FIND_LINKS", "UV_OFFLINE", "UV_INDEX_URL", "UV_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_DEFAULT_INDEX", index.url)
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "600")  # uv waits on the index, it does not give up
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    yield index
    index.close()


def _fresh_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".fresh-"))


def _uv_processes(root: Path) -> list[psutil.Process]:
    """uv processes building under ``root`` (its path is on their command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name == "uv" and any(str(root) in a for a in cmdline):
            found.append(proc)
    return found


def test_close_kills_builds_in_flight_and_leaves_no_venv_or_uv(tmp_path, stalling_index):
    """Regression: close() waited for in-flight uv builds, so a worker whose shutdown was
    cut short left venvs built ahead behind. Now it stops them: the uv build of the pristine
    venv every fresh venv is cloned from is stuck on the index, the task's own venv and both
    ahead wait for it when close() is called; it returns, the task sees WorkerStopping, and
    no venv directory or uv process is left."""
    root = tmp_path / "venvs"
    fresh = FreshVenvs(VenvCache(root), ahead=2)
    outcome: list[BaseException | object] = []

    def task() -> None:
        try:
            outcome.append(fresh.take(REQS))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    taker = threading.Thread(target=task, daemon=True)
    taker.start()
    try:
        wait_for(lambda: stalling_index.paths and len(fresh._building) == 3, 180,
                 "the pristine venv's uv build to reach the stalling index, with three fresh "
                 "venvs (the task's own, two ahead) waiting for it",
                 on_fail=lambda: f"requests: {stalling_index.paths}, "
                                 f"dirs: {_fresh_dirs(root)}")
        assert len(_fresh_dirs(root)) == 1 and len(_uv_processes(root)) == 1

        closer = threading.Thread(target=fresh.close, daemon=True)
        closer.start()
        closer.join(120)
        assert not closer.is_alive(), (
            "close() did not return within 120 s while a uv build was in flight: it "
            "waits for it instead of stopping it")
        taker.join(60)
        assert not taker.is_alive(), "the task's take() did not end after close()"
        (error,) = outcome
        assert isinstance(error, WorkerStopping), error
        assert str(error).startswith("the venv build for [tinylib==1.0] was stopped: this "
                                     "Dask worker process is shutting down")
        assert _fresh_dirs(root) == []
        wait_for(lambda: not _uv_processes(root), 30, "the killed uv processes to be gone",
                 on_fail=lambda: f"left: {_uv_processes(root)}")
        with pytest.raises(WorkerStopping):  # and a closed store takes no new task
            fresh.take(REQS)
    finally:
        stalling_index.release.set()  # on the old code: lets the builds fail and end
        taker.join(120)
        fresh.close()
    assert sorted(p.name for p in root.iterdir()) == [".locks"]


def test_a_build_that_times_out_leaves_no_venv_or_uv(tmp_path, stalling_index):
    """uv stuck on the index past MODELOPS' build timeout: the task gets the clear error,
    and uv (its whole process group) and the half-built venv are gone."""
    root = tmp_path / "venvs"
    cache = VenvCache(root, build_timeout=10)  # uv venv, offline, takes well under it
    with pytest.raises(EnvironmentBuildError) as err:
        cache.fresh(REQS)
    assert str(err.value).startswith("building the bundle's environment timed out after 10s "
                                     "(uv pip); check that the package index configured "
                                     "with UV_* variables is reachable"), err.value
    assert stalling_index.paths, "uv never asked the index"
    assert _fresh_dirs(root) == []
    assert not _uv_processes(root)


def test_a_worker_stopped_mid_build_leaves_no_venv_or_uv(dask_cluster, tmp_path,
                                                          stalling_index):
    """The same at the worker's depth, stopped as Kubernetes stops a pod (SIGTERM to the
    container's main process, the nanny then gives the worker a few seconds to close): the
    pristine venv's uv build is stuck on the index, a task's venv and two ahead wait for
    it; the worker's own shutdown leaves no venv directory and no uv process (on the old
    code the nanny killed the worker while close() waited, leaving the directories)."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path / "src", repo, {"model.py": "def sim(params, seed):\n"
                                                           "    return {}\n",
                                               "requirements.txt": "tinylib==1.0\n"},
                      name="deps")
    cluster, client = dask_cluster({"MODELOPS_BUNDLE_REPO": str(repo),
                                    "MODELOPS_FORCE_FRESH_VENV": "true",
                                    "MODELOPS_FRESH_VENVS_AHEAD": "2"})
    venvs = cluster.root / "venvs"
    submit(client, [SimTask(bundle=ref, entrypoint="model:sim", seed=0)], study="stuck")
    wait_for(lambda: stalling_index.paths and _uv_processes(venvs), 180,
             "the pristine venv's uv build to reach the stalling index",
             on_fail=lambda: f"requests: {stalling_index.paths}, dirs: {_fresh_dirs(venvs)}")
    assert len(_fresh_dirs(venvs)) == 1

    (worker,) = cluster.workers
    os.kill(worker.popen.pid, signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "`dask worker` to exit on SIGTERM",
             on_fail=lambda: tail(worker.log))
    assert "shutting down executor=isolated_warm" in worker.log_text()
    assert _fresh_dirs(venvs) == [], tail(worker.log)
    wait_for(lambda: not _uv_processes(venvs), 30, "the worker's uv processes to be gone",
             on_fail=lambda: f"left: {_uv_processes(venvs)}")


def _one_venv_bytes(root: Path) -> int:
    cache = VenvCache(root)
    venv = cache.fresh(REQS)
    try:
        return tree_bytes(venv.path, set())
    finally:
        cache.remove(venv)
        cache.pristines.close()


def test_venvs_are_built_ahead_only_within_the_budget(tmp_path, uv_offline, caplog):
    """Venvs built ahead count against worker.cache.venvsBudget: with room for the task's
    own venv only, none is built ahead (one log line says why) and each task still gets
    its venv; with room for one more, one is; without a budget, ``ahead`` are. The
    pristine venv they are cloned from is in the store too, and every venv is counted
    alone, as if its hard links were copies (conservative)."""
    caplog.set_level(logging.DEBUG, "modelops_runtime.venvs")
    root = tmp_path / "venvs"
    size = _one_venv_bytes(root)  # a real tinylib venv, measured the way the store is
    cache = VenvCache(root, max_bytes=size)
    fresh = FreshVenvs(cache, ahead=2)
    try:
        taken = [fresh.take(REQS), fresh.take(REQS)]
        assert fresh.ahead_of(REQS) == 0
        (pristine,) = cache.pristines.paths()
        assert _fresh_dirs(root) == sorted([pristine.name, *(v.path.name for v in taken)])
        assert len({v.path for v in taken}) == 2 and all(v.fresh for v in taken)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and r.getMessage().startswith("no venv is built ahead")]
        assert len(warnings) == 1, warnings  # once, not per task
        assert "would exceed worker.cache.venvsBudget" in warnings[0]
        assert "MODELOPS_VENVS_MAX_BYTES" in warnings[0]
        for venv in taken:
            cache.remove(venv)

        # room for the pristine venv, the task's own and one more (a venv's size is
        # conservative: files shared by hard links are counted in each venv measured alone)
        cache.max_bytes = 3 * size + size // 4
        venv = fresh.take(REQS)
        assert fresh.ahead_of(REQS) == 1
        assert any(r.getMessage().startswith("venvs are built ahead again")
                   for r in caplog.records)
        cache.remove(venv)
    finally:
        fresh.close()
    assert _fresh_dirs(root) == []

    unbounded = FreshVenvs(VenvCache(root), ahead=2)
    try:
        venv = unbounded.take(REQS)
        assert unbounded.ahead_of(REQS) == 2
        unbounded.venvs.remove(venv)
    finally:
        unbounded.close()
    assert _fresh_dirs(root) == []
