"""Real wheels built locally, so tests install dependencies with uv without any network.

A wheel is a zip archive holding the package files plus ``<name>-<version>.dist-info/``
with METADATA, WHEEL and RECORD (PEP 427 / PEP 491); that is all uv needs to install it.
Workers get :func:`offline_uv_env` so uv resolves only from the local find-links dir.
A pytest plugin (tests/conftest.py loads it): the fixtures ``wheelhouse`` and ``uv_offline``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

__all__ = ["build_wheel", "offline_uv_env", "uv_offline", "wheelhouse"]


def _normalize(name: str) -> str:
    # wheel file and dist-info names use the escaped project name (PEP 427 / binary dist spec)
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(out_dir: Path, name: str, version: str, modules: Mapping[str, str], *,
                requires: Iterable[str] = ()) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``out_dir`` and return its path.

    ``modules`` maps paths inside the wheel to their source text, e.g.
    ``{"tinylib/__init__.py": "VALUE = 1\\n"}``; a key without ``/`` or ``.py`` is read as
    a top-level module name (``"tinylib"`` → ``tinylib.py``). ``requires`` become
    ``Requires-Dist`` lines.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dist = _normalize(name)
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for key, source in modules.items():
        path = key if ("/" in key or key.endswith(".py")) else key.replace(".", "/") + ".py"
        files[path] = source.encode()
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires]
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: modelops-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n").encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{dist}-{version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    tmp.replace(wheel)
    return wheel


def offline_uv_env(find_links: Path) -> dict[str, str]:
    """uv's own variables for installing only from ``find_links`` (never the network)."""
    return {"UV_FIND_LINKS": str(find_links), "UV_OFFLINE": "1"}


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """A find-links directory with small real wheels the test bundles depend on:
    ``tinylib`` 1.0 and 2.0 (``tinylib.VERSION``) and ``tinydep`` 0.1 (requires tinylib)."""
    root = tmp_path_factory.mktemp("wheelhouse")
    for version in ("1.0", "2.0"):
        build_wheel(root, "tinylib", version,
                    {"tinylib/__init__.py": f"VERSION = {version!r}\n"})
    build_wheel(root, "tinydep", "0.1", {"tinydep.py": "import tinylib\nDEP = 'tinydep'\n"},
                requires=["tinylib"])
    return root


@pytest.fixture
def uv_offline(monkeypatch, wheelhouse):
    """This process's uv (and every process it starts) installs from :func:`wheelhouse`
    only, offline."""
    for key, value in offline_uv_env(wheelhouse).items():
        monkeypatch.setenv(key, value)
