"""What keeps the tests' uv builds off every package index: ``UV_OFFLINE`` (uv's own
``--offline``) with the wheels in ``UV_FIND_LINKS`` (support/wheels.py ``offline_uv_env``).

- covers: a venv build through the runtime's VenvCache, next to an index on 127.0.0.1
  named in ``UV_INDEX_URL``, that asks it nothing; and the same build without
  ``UV_OFFLINE`` asking it, with ``UV_NO_INDEX`` set too (uv has no variable for
  ``--no-index``, so that setting did nothing and is used nowhere).
"""

from __future__ import annotations

import pytest

from modelops_runtime.worker.warm.venvs.store import VenvCache
from support.index import HeldIndex
from support.wheels import offline_uv_env


@pytest.fixture
def index():
    held = HeldIndex()  # no wheels: answers 404 at once once released
    held.release.set()
    yield held
    held.close()


@pytest.mark.parametrize("offline", [True, False])
def test_only_uv_offline_keeps_a_build_off_the_index(monkeypatch, tmp_path, wheelhouse,
                                                     index, offline):
    env = offline_uv_env(wheelhouse)
    if not offline:
        del env["UV_OFFLINE"]
        env["UV_NO_INDEX"] = "1"
    for name in ("UV_OFFLINE", "UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, "UV_INDEX_URL": index.url,
                        "UV_CACHE_DIR": str(tmp_path / "uv-cache")}.items():
        monkeypatch.setenv(name, value)
    venv = VenvCache(tmp_path / "venvs").get(["tinylib==1.0"])
    assert (venv.path / "bin" / "python").exists()
    if offline:
        assert index.paths == [], f"an offline build asked the index: {index.paths}"
    else:
        assert any("tinylib" in path for path in index.paths), index.paths
