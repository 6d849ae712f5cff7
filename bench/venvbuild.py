"""The venv of a bundle with real dependencies, installed offline from local wheels:

* uv from a warm cache — VenvCache.get into a new venv directory, the uv cache already
  holding the wheels (a pod's second dependency set, or a new pod with a persistent cache)
* ``python -m venv`` + ``pip install --no-index --find-links`` — the usual way
* cache hit — VenvCache.get of an existing venv (what every warm process spawn pays)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelops_runtime.worker.warm.venvs.store import VenvCache

from common import Samples, Workspace, environ, side_by_side
from wheels import wheelhouse

PACKAGES = ["pydantic", "pyyaml", "tqdm", "fsspec", "psutil"]  # + their requirements
SMOKE_PACKAGES = ["tqdm"]
CHECK_IMPORT = {"pydantic": "pydantic", "pyyaml": "yaml", "tqdm": "tqdm", "fsspec": "fsspec",
                "psutil": "psutil"}


def _imports_work(python: Path, packages: list[str]) -> None:
    modules = ", ".join(CHECK_IMPORT[p] for p in packages)
    subprocess.run([str(python), "-c", f"import {modules}"], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


def run(ws: Workspace, *, smoke: bool) -> dict[str, Any]:
    packages = SMOKE_PACKAGES if smoke else PACKAGES
    links, requirements = wheelhouse(packages, ws.root / "wheelhouse")
    uv_env = {"UV_FIND_LINKS": str(links), "UV_OFFLINE": "1",
              "UV_CACHE_DIR": str(ws.root / "uv-cache")}
    builds = iter(range(1_000_000))
    pip_venvs: list[Path] = []

    with environ(uv_env):
        cold = VenvCache(ws.root / "venvs-cold")
        t0 = time.perf_counter()
        cold_venv = cold.get(requirements)
        cold_s = time.perf_counter() - t0
        _imports_work(cold_venv.python, packages)

        def uv_warm() -> None:
            cache = VenvCache(ws.root / f"venvs-{next(builds)}")
            venv = cache.get(requirements)
            assert not venv.cache_hit

        def pip_venv() -> Path:
            dest = ws.root / f"pip-venv-{next(builds)}"
            pip_venvs.append(dest)
            subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True,
                           stdin=subprocess.DEVNULL)
            subprocess.run([str(dest / "bin" / "pip"), "install", "--quiet",
                            "--disable-pip-version-check", "--no-index", "--find-links",
                            str(links), *requirements], check=True, stdin=subprocess.DEVNULL)
            return dest

        builds_side = side_by_side({"uv (warm cache)": uv_warm, "venv + pip": pip_venv},
                                   rounds=1 if smoke else 3, per_round=1, warmup=0)
        _imports_work(pip_venvs[-1] / "bin" / "python", packages)

        # a hit in a running worker process: the fingerprint was checked once already
        hits = side_by_side({"cache hit": lambda: cold.get(requirements)},
                            rounds=1, per_round=50 if smoke else 500)

        def first_hit() -> None:  # a new worker process: checks the interpreter once
            VenvCache(ws.root / "venvs-cold").get(requirements)

        first = side_by_side({"first hit in a new worker process": first_hit},
                             rounds=1, per_round=3 if smoke else 20, warmup=0)

    samples: dict[str, Samples] = {**builds_side, **hits, **first}
    out: dict[str, Any] = {name: {"median_s": s.median, "p90_s": s.p90, "n": len(s.times)}
                           for name, s in samples.items()}
    out["uv (cold cache)"] = {"median_s": cold_s, "p90_s": cold_s, "n": 1}
    out["requirements"] = requirements
    out["wheels"] = sorted(p.name for p in links.glob("*.whl"))
    out["wheel_bytes"] = sum(p.stat().st_size for p in links.glob("*.whl"))
    return out


if __name__ == "__main__":  # quick look: python bench/venvbuild.py [--smoke]
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        print(json.dumps(run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv), indent=1))
