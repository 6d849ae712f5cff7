"""uv's own cache within MODELOPS_UV_CACHE_MAX_BYTES (worker/warm/venvs/uvcache.py): real uv
builds from local wheels, real `uv cache prune`/`clean`, and a real concurrent uv build in
another process stuck on a local index while a collection would run."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelops_runtime.worker.warm.venvs.uvcache import cache_bytes
from modelops_runtime.worker.warm.venvs.store import VenvCache
from support.cluster import wait_for
from support.index import HeldIndex
from support.paths import REPO

SET_A = ["tinylib==1.0"]
SET_B = ["tinydep==0.1", "tinylib==2.0"]
BUDGET = 4096  # bytes of its own: far below what one build leaves in uv's cache


@pytest.fixture
def uv_offline(uv_offline, monkeypatch):  # support.wheels's, plus:
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)  # the store's default, <root>/../uv-cache


def _imports(venv: Path, code: str) -> None:
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{venv}: {code!r} failed:\n{proc.stderr}"


def _collections(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "modelops_runtime.venvs" and "uv cache prune" in r.getMessage()]


def test_uv_cache_is_kept_within_its_budget_and_venvs_survive(tmp_path, uv_offline, caplog):
    caplog.set_level(logging.INFO, "modelops_runtime.venvs")
    root, uv_cache = tmp_path / "venvs", tmp_path / "uv-cache"
    unbounded = VenvCache(tmp_path / "unbounded" / "venvs")
    os.close(unbounded.get(SET_A).lease)
    left = cache_bytes(tmp_path / "unbounded" / "uv-cache")[0]
    assert left > BUDGET, f"one build leaves only {left} bytes of its own in uv's cache"
    assert _collections(caplog) == []  # no budget: never collected

    cache = VenvCache(root, uv_cache_max_bytes=BUDGET)
    a = cache.get(SET_A)
    assert cache_bytes(uv_cache)[0] <= BUDGET
    b = cache.get(SET_B)
    assert cache_bytes(uv_cache)[0] <= BUDGET
    lines = _collections(caplog)
    assert len(lines) == 2, lines  # one INFO line per collection, with the sizes
    for line in lines:
        assert re.match(rf"uv cache {re.escape(str(uv_cache))}: .+ of its own \(.+ with files "
                        r"venvs share\) above its budget of 4\.00 kiB: uv cache prune → .+",
                        line), line
    # the venvs' files outlive the cache that they were linked from
    init = a.path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / \
        "site-packages" / "tinylib" / "__init__.py"
    assert init.stat().st_nlink == 1, "uv's cache still links the first venv's files"
    _imports(a.path, "import tinylib; assert tinylib.VERSION == '1.0'")
    _imports(b.path, "import tinydep, tinylib; assert tinylib.VERSION == '2.0'")

    # the first set built again, offline, into an emptied cache: from the find-links wheels
    os.close(a.lease)
    cache.max_bytes = 1
    cache.collect()  # the venv GC removes the unused first venv (the second is in use)
    assert not a.path.exists() and b.path.is_dir()
    again = cache.get(SET_A)
    assert not again.cache_hit
    _imports(again.path, "import tinylib; assert tinylib.VERSION == '1.0'")
    _imports(b.path, "import tinydep, tinylib; assert tinylib.VERSION == '2.0'")
    assert cache_bytes(uv_cache)[0] <= BUDGET
    os.close(again.lease)
    os.close(b.lease)


OTHER_WORKER = """
import sys
from modelops_runtime.worker.warm.venvs.store import VenvCache
venv = VenvCache(sys.argv[1]).get(["tinydep==0.1"])
print(venv.path)
"""


def test_a_collection_skips_while_another_uv_build_uses_the_cache(tmp_path, uv_offline,
                                                                  wheelhouse, caplog):  # noqa: F811
    """Another worker process of the pod builds a venv (its uv stuck on a slow index, holding
    uv's cache lock) while this one builds another set above the budget: the collection is
    skipped at once (no clean under a running build), the other build then finishes and
    its venv works, and the next build here collects."""
    caplog.set_level(logging.INFO, "modelops_runtime.venvs")
    root, uv_cache = tmp_path / "venvs", tmp_path / "uv-cache"
    index = HeldIndex(wheelhouse)
    env = {k: v for k, v in os.environ.items()
           if k not in ("UV_FIND_LINKS", "UV_OFFLINE", "UV_INDEX_URL", "UV_INDEX")}
    env.update(UV_DEFAULT_INDEX=index.url, UV_HTTP_TIMEOUT="600", NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1", PYTHONPATH=str(REPO / "runtime" / "src"))
    other = subprocess.Popen([sys.executable, "-c", OTHER_WORKER, str(root)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: index.paths or other.poll() is not None, 180,
                 "the other worker process's uv build to ask the index",
                 on_fail=lambda: f"exit code {other.poll()}")
        assert other.poll() is None, other.communicate()[1]

        cache = VenvCache(root, uv_cache_max_bytes=BUDGET)
        a = cache.get(SET_A)  # offline, from find-links, beside the stuck build
        own = cache_bytes(uv_cache)[0]
        assert own > BUDGET, "the cache was collected while another uv build used it"
        skipped = [r.getMessage() for r in caplog.records if "in use by a uv build" in
                   r.getMessage()]
        assert len(skipped) == 1 and _collections(caplog) == [], skipped

        index.release.set()
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, f"the other worker process's build failed:\n{err}"
        _imports(Path(out.strip()), "import tinydep, tinylib")

        b = cache.get(["tinylib==2.0"])  # the next build collects
        assert cache_bytes(uv_cache)[0] <= BUDGET
        assert len(_collections(caplog)) == 1
        _imports(a.path, "import tinylib; assert tinylib.VERSION == '1.0'")
        _imports(b.path, "import tinylib; assert tinylib.VERSION == '2.0'")
        _imports(Path(out.strip()), "import tinydep, tinylib")
        os.close(a.lease)
        os.close(b.lease)
    finally:
        if other.poll() is None:
            other.kill()
            other.communicate()
        index.close()
