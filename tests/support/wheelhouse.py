"""The locked wheelhouse of real scientific packages (numpy, scipy, pandas, numba,
matplotlib, joblib, starsim), for tests that build venvs of real models with uv, offline.

- Covers: where the install step put it (.tools/wheelhouse, `make wheelhouse`, from
  ci/wheelhouse/requirements.lock), a check that it is complete for the lock (every wheel
  with a hash the lock allows), and uv's own variables that install only from it.
- Does not: fetch anything (only the install step touches the network; a test without a
  complete wheelhouse skips with one line, which fails under CI=true).
- See also: ci/wheelhouse/wheelhouse.py (lock, fetch, verify), support/wheels.py (tiny
  wheels built on the spot).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pytest

from support.paths import REPO

SCRIPT = REPO / "ci" / "wheelhouse" / "wheelhouse.py"
WHEELHOUSE = REPO / ".tools" / "wheelhouse"

__all__ = ["WHEELHOUSE", "lock_module", "offline_env", "real_wheels", "require_wheelhouse"]


@cache
def lock_module():
    """ci/wheelhouse/wheelhouse.py, imported by path (ci/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ci_wheelhouse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _missing() -> str | None:
    if not WHEELHOUSE.is_dir():
        return f"{WHEELHOUSE} does not exist"
    if not lock_module().complete(WHEELHOUSE):
        problems = lock_module().verify(WHEELHOUSE) or ["it was fetched for another lock"]
        return f"{WHEELHOUSE} is not complete for ci/wheelhouse/requirements.lock: {problems[0]}"
    return None


def require_wheelhouse() -> Path:
    """The wheelhouse directory, or a skip saying how to get it."""
    missing = _missing()
    if missing:
        pytest.skip(f"the locked wheelhouse is needed ({missing}); run `make wheelhouse`")
    return WHEELHOUSE


def offline_env(wheelhouse: Path = WHEELHOUSE) -> dict[str, str]:
    """uv's own variables (the runtime passes UV_* through to its builds): install only
    from ``wheelhouse``, never from an index."""
    return {"UV_FIND_LINKS": str(wheelhouse), "UV_OFFLINE": "1"}


@pytest.fixture(scope="session")
def real_wheels() -> Path:
    """The complete locked wheelhouse (skips with one line when it was not fetched)."""
    return require_wheelhouse()
