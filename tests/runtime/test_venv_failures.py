"""Venv build failures: a transient one (uv killed by a signal, the index unreachable) is
retried with bounded backoff and never remembered as the requirements' fault; a permanent
one (the resolver's verdict) is remembered for FAILED_BUILD_MEMORY seconds as before. Real
uv builds, a real index on 127.0.0.1, real signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from modelops_runtime.errors import EnvironmentBuildError
from modelops_runtime.worker.warm.venvs import store
from modelops_runtime.worker.warm.venvs.store import VenvCache
from support.index import HeldIndex
from support.ports import HeldPort
from support.wheels import offline_uv_env, wheelhouse  # noqa: F401 - fixture

REMEMBERED = "ago in this worker process"


@pytest.fixture
def quick_retries(monkeypatch):
    """The retry pauses shortened (the policy is the same, the test waits less)."""
    monkeypatch.setattr(store, "BUILD_RETRY_DELAYS", (0.2, 0.4), raising=False)


def _wait_for(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()):
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _uv_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if p.name() == "uv" or p.name().startswith("uv")]


def test_uv_killed_mid_build_is_retried_and_the_venv_is_built(tmp_path, monkeypatch,
                                                              wheelhouse, quick_retries):  # noqa: F811
    """The row: uv SIGKILLed mid-build (what the OOM killer does). Before: the task failed
    "Fix the bundle's requirements" and the worker process answered every task of the
    bundle so for 30 s. Now the build is tried again and succeeds."""
    index = HeldIndex(wheelhouse)
    try:
        monkeypatch.setenv("UV_INDEX_URL", index.url)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
        monkeypatch.delenv("UV_OFFLINE", raising=False)
        cache = VenvCache(tmp_path / "venvs")
        outcome: dict = {}

        def build():
            try:
                outcome["venv"] = cache.get(["tinylib==1.0"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        thread = threading.Thread(target=build)
        thread.start()
        _wait_for("uv to ask the index", lambda: index.paths)
        victims = _wait_for("the uv process", _uv_children)
        for proc in victims:
            os.kill(proc.pid, signal.SIGKILL)
        index.release.set()
        thread.join(300)
        assert not thread.is_alive(), "the build did not finish within 300 s"
        assert "error" not in outcome, f"the build failed: {outcome.get('error')}"
        venv = outcome["venv"]
        assert venv.python.exists() and not venv.cache_hit
        os.close(venv.lease)
    finally:
        index.close()


def test_an_unreachable_index_is_a_transient_failure_tried_again(tmp_path, monkeypatch,
                                                                  quick_retries, request):
    """The index refuses connections: the message says the failure is transient and why,
    that it was tried 3 times, and the next task builds again (not answered from memory)."""
    closed = HeldPort()  # held, never listening: connections are refused
    request.addfinalizer(closed.release)
    monkeypatch.setenv("UV_INDEX_URL", f"http://127.0.0.1:{closed.port}/simple")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    monkeypatch.delenv("UV_OFFLINE", raising=False)
    cache = VenvCache(tmp_path / "venvs")
    for _ in range(2):
        with pytest.raises(EnvironmentBuildError) as caught:
            cache.get(["tinylib==1.0"])
        message = str(caught.value)
        assert "a transient failure, not a fault of the requirements" in message
        assert "network failure" in message
        assert "Tried 3 times" in message
        assert "Fix the bundle's requirements" not in message
        assert REMEMBERED not in message  # the second task ran uv again
        assert caught.value.transient and caught.value.attempts == 3
    assert not [p for p in (tmp_path / "venvs").iterdir() if not p.name.startswith(".")]


def test_a_resolver_error_is_permanent_and_remembered(tmp_path, monkeypatch, wheelhouse,  # noqa: F811
                                                      quick_retries):
    """No such version: not retried, called permanent, and the next task of the bundle is
    answered from memory for FAILED_BUILD_MEMORY seconds, as before."""
    for key, value in offline_uv_env(wheelhouse).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    cache = VenvCache(tmp_path / "venvs")
    with pytest.raises(EnvironmentBuildError) as first:
        cache.get(["tinylib==9.9"])
    assert "a permanent failure" in str(first.value)
    assert "Fix the bundle's requirements" in str(first.value)
    assert "Tried" not in str(first.value) and not first.value.transient
    with pytest.raises(EnvironmentBuildError) as second:
        cache.get(["tinylib==9.9"])
    assert REMEMBERED in str(second.value)
