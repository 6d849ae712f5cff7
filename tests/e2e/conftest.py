"""End-to-end fixtures: the real `modelops-runtime local` CLI on the real chart, offline.

The e2e study (``sir_study/``) depends on ``sirsteps``, a wheel built here with
``support.wheels``; the local cluster processes get uv's offline variables so that the
warm executor installs it from a local find-links directory, never from the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from e2e_support import SIRSTEPS, STUDY, LocalCli
from support.wheels import build_wheel, offline_uv_env


@pytest.fixture(scope="session")
def sir_wheels(tmp_path_factory) -> Path:
    """find-links directory holding the sirsteps 1.0 wheel."""
    root = tmp_path_factory.mktemp("sir-wheels")
    build_wheel(root, "sirsteps", "1.0", {"sirsteps/__init__.py": SIRSTEPS})
    return root


@pytest.fixture(scope="session")
def worker_image_site(sir_wheels, tmp_path_factory) -> Path:
    """sirsteps installed the way a worker image would have it (for executor=direct, which
    runs the bundle on the worker's own environment): ``uv pip install --target``, offline."""
    site = tmp_path_factory.mktemp("worker-image-site")
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "pip", "install", "--quiet", "--python", sys.executable,
                    "--target", str(site), "sirsteps==1.0"],
                   env={**os.environ, **offline_uv_env(sir_wheels),
                        "UV_CACHE_DIR": str(site.parent / "uv-cache")},
                   check=True, capture_output=True, timeout=120)
    return site


@pytest.fixture(scope="session")
def reference(sir_wheels) -> Callable[[int, dict], dict]:
    """Expected outputs per seed, computed by importing the bundle directly (no Dask): every
    mode must give exactly these."""
    cache: dict[tuple, dict] = {}
    wheel = next(sir_wheels.glob("sirsteps-*.whl"))
    study = yaml.safe_load((STUDY / "study.yaml").read_text())

    def expected(seed: int, params: dict | None = None) -> dict:
        params = dict(study["params"] if params is None else params)
        key = (seed, json.dumps(params, sort_keys=True))
        if key not in cache:
            code = ("import json, sys; from sirtest.model import simulate; "
                    "print(json.dumps(simulate(json.loads(sys.argv[1]), int(sys.argv[2]))))")
            out = subprocess.run(
                [sys.executable, "-c", code, json.dumps(params), str(seed)],
                env={**os.environ, "PYTHONPATH": f"{wheel}{os.pathsep}{STUDY / 'bundle'}"},
                capture_output=True, text=True, check=True, timeout=60)
            cache[key] = json.loads(out.stdout)
        return cache[key]

    return expected


@pytest.fixture
def local_env(sir_wheels, tmp_path) -> Callable[..., dict[str, str]]:
    """Environment for `modelops-runtime local`: ours without MODELOPS_*, uv offline on the
    test wheels; ``direct=True`` adds the 'worker image' site with sirsteps."""

    def make(*, direct: bool = False, site: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
        env.update(offline_uv_env(sir_wheels))
        env["PYTHONUNBUFFERED"] = "1"
        if direct:
            assert site is not None
            env["PYTHONPATH"] = str(site)
        return env

    return make


@pytest.fixture
def local_cli():
    """A :class:`LocalCli`; every process of every run is killed at teardown, also when the
    test fails."""
    cli = LocalCli()
    yield cli
    cli.cleanup()
