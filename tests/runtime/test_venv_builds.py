"""Venv builds run uv, and uv may run a build backend: bundle-chosen code. Attacked with a
requirement on a local package whose in-tree build backend dumps its environment."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from modelops_runtime.errors import EnvironmentBuildError
from modelops_runtime.worker.warm.venvs.store import VenvCache

SECRET = "worker-secret-for-the-backend"

# PEP 517 backend in the package itself (backend-path): no build requirements, no network
BACKEND = textwrap.dedent('''
    import base64, hashlib, json, os, zipfile

    def _dump():
        with open(DUMP, "w") as fh:
            json.dump(dict(os.environ), fh)

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        _dump()
        name = "dumpenv-0.1-py3-none-any.whl"
        files = {"dumpenv.py": b"X = 1\\n",
                 "dumpenv-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: dumpenv\\nVersion: 0.1\\n",
                 "dumpenv-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
        rows = []
        for path, data in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{path},sha256={digest},{len(data)}")
        rows.append("dumpenv-0.1.dist-info/RECORD,,")
        with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
            for path, data in files.items():
                zf.writestr(path, data)
            zf.writestr("dumpenv-0.1.dist-info/RECORD", "\\n".join(rows) + "\\n")
        return name

    def get_requires_for_build_wheel(config_settings=None):
        _dump()
        return []
''')


def _package(tmp_path: Path) -> tuple[str, Path]:
    """(requirement, dump file) of the local package with the dumping backend."""
    src, dump = tmp_path / "dumpenv", tmp_path / "dumped-env.json"
    src.mkdir()
    (src / "backend.py").write_text(f"DUMP = {str(dump)!r}\n" + BACKEND)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]

        [project]
        name = "dumpenv"
        version = "0.1"
    '''))
    return f"dumpenv @ {src.as_uri()}", dump


@pytest.fixture
def worker_env(monkeypatch, tmp_path):
    """The worker's environment: a secret, offline uv."""
    monkeypatch.setenv("MY_SECRET_TOKEN", SECRET)
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


def test_source_builds_are_refused_by_default(tmp_path, worker_env):
    requirement, dump = _package(tmp_path)
    cache = VenvCache(tmp_path / "venvs")
    with pytest.raises(EnvironmentBuildError) as info:
        cache.get([requirement])
    first = str(info.value).splitlines()[0]
    assert "source distributions are not built" in first and "allowSdistBuilds" in first, first
    assert not dump.exists(), "the build backend ran"
    assert [p.name for p in (tmp_path / "venvs").iterdir() if p.name != ".locks"] == []


def test_opted_in_source_builds_do_not_see_the_worker_environment(tmp_path, worker_env):
    requirement, dump = _package(tmp_path)
    cache = VenvCache(tmp_path / "venvs", allow_sdist_builds=True, passthrough=["MY_VISIBLE"])
    venv = cache.get([requirement])
    assert (venv.path / "bin" / "python").exists()
    seen = json.loads(dump.read_text())  # the backend did run: the point of opting in
    assert SECRET not in json.dumps(seen)
    assert "MY_SECRET_TOKEN" not in seen
    assert {k for k in seen if k.startswith("UV_")} >= {"UV_OFFLINE", "UV_CACHE_DIR"}
