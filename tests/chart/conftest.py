"""Chart tests run on both helm majors; a missing binary fails (never skips)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import chartkit


@pytest.fixture(params=sorted(chartkit.HELMS), scope="session")
def helm(request) -> str:
    chartkit.helm_binary(request.param)
    return request.param


@pytest.fixture(scope="session")
def packaged(tmp_path_factory) -> dict[str, Path]:
    """`helm package` with each helm: the .tgz a chart repository would serve."""
    out = {}
    for name in sorted(chartkit.HELMS):
        dest = tmp_path_factory.mktemp(name)
        proc = subprocess.run([str(chartkit.helm_binary(name)), "package", str(chartkit.CHART),
                               "-d", str(dest)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        (tgz,) = dest.glob("modelops-dask-*.tgz")
        out[name] = tgz
    return out
