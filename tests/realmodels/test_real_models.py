"""Real scientific models in every preset, equal seed by seed to a plain loop (issue #23).

The bundle (``bundle/``) holds six models, one venv for all (its requirements resolve to
ci/wheelhouse/requirements.lock, installed offline from the tests' wheelhouse): starsim's
SIR (numba, scipy, pandas), a numba ``@njit(cache=True)`` walk, a scipy ODE, a matplotlib
figure saved next to the model and returned as PNG bytes, a pandas model reading a CSV
shipped in the bundle, and a ``joblib.Memory`` model. Each returns numpy arrays and
scalars, which the worker decodes with its restricted unpickler.

The plain loop: the entrypoint called in a fresh interpreter per seed, in a venv of the
same lock (writable, as on a laptop: numba caches next to the source). Every preset runs
one local cluster (values-examples/<preset>.yaml, as `modelops-runtime local` starts it)
on one state directory shared by the presets; direct presets run the models in the worker's
own environment, the stand-in worker image (the wheelhouse installed with --target).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import PRESETS, REPO
from support.wheelhouse import offline_env, real_wheels  # noqa: F401 - fixture

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "bundle"
UV = str(Path(sys.executable).with_name("uv"))
MODELS = {"realmodels.ssir:simulate": {"agents": 300, "years": 6},
          "realmodels.njitwalk:simulate": {"steps": 100},
          "realmodels.ode:simulate": {},
          "realmodels.figure:simulate": {},
          "realmodels.table:simulate": {"rows": 6},
          "realmodels.memo:simulate": {"n": 10}}
FIRST_SEED, SEEDS = 40, 2

PLAIN = """import pickle, sys
sys.path.insert(0, sys.argv[1])
module, _, function = sys.argv[2].partition(":")
simulate = getattr(__import__(module, fromlist=[function]), function)
outputs = simulate(eval(sys.argv[3]), int(sys.argv[4]))
with open(sys.argv[5], "wb") as f:
    pickle.dump(outputs, f)
"""


def _uv(*args: str, env: dict[str, str]) -> None:
    out = subprocess.run([UV, *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"uv {' '.join(args)}:\n{out.stderr[-3000:]}"


@pytest.fixture(scope="module")
def work(real_wheels, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("realmodels")


@pytest.fixture(scope="module")
def uv_env(real_wheels, work) -> dict[str, str]:
    """Ours without MODELOPS_*, uv offline on the wheelhouse, one uv cache for the module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    env.update(offline_env(real_wheels), UV_CACHE_DIR=str(work / "uv-cache"),
               HOME=str(work / "home"), PYTHONUNBUFFERED="1")
    (work / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="module")
def reference(uv_env, work) -> Path:
    """The plain loop's outputs, one pickle per (model, seed)."""
    venv, out = work / "plain-venv", work / "reference"
    out.mkdir()
    env = {**uv_env, "UV_CACHE_DIR": str(work / "plain-uv-cache"), "UV_LINK_MODE": "copy"}
    _uv("venv", "--quiet", "--python", sys.executable, str(venv), env=env)
    _uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r",
        str(BUNDLE / "requirements.txt"), env=env)
    for model, params in MODELS.items():
        for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
            cwd = work / "plain-cwd" / f"{model}-{seed}"
            cwd.mkdir(parents=True)
            run = subprocess.run([str(venv / "bin" / "python"), "-c", PLAIN, str(BUNDLE), model,
                                  repr(params), str(seed), str(out / f"{model}-{seed}.pkl")],
                                 cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, f"plain loop {model} seed {seed}:\n{run.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def worker_site(uv_env, work) -> Path:
    """The wheelhouse's packages installed the way a worker image has them, for direct
    presets (the models run in the worker's environment) and for the client, which
    unpickles numpy outputs."""
    site = work / "worker-image-site"
    _uv("pip", "install", "--quiet", "--python", sys.executable, "--target", str(site), "-r",
        str(BUNDLE / "requirements.txt"), env={**uv_env, "UV_LINK_MODE": "copy"})
    return site


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_real_models_equal_the_plain_loop(preset, reference, worker_site, uv_env, work):
    job = work / f"{preset}.json"
    job.write_text(json.dumps({
        "preset": str(REPO / "values-examples" / f"{preset}.yaml"), "chart": str(REPO / "chart"),
        "state": str(work / "state"),
        "bundle": str(BUNDLE), "models": list(MODELS), "params": MODELS,
        "first_seed": FIRST_SEED, "seeds": SEEDS, "reference": str(reference)}))
    env = {**uv_env, "PYTHONPATH": str(worker_site)}
    run = subprocess.run([sys.executable, str(HERE / "drive.py"), str(job)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert not report["failures"], "\n".join(report["failures"])
    assert sorted(report["runs"]) == sorted(f"{m} {s}" for m in MODELS
                                            for s in range(FIRST_SEED, FIRST_SEED + SEEDS))
    differ = {run: diffs for run, diffs in report["runs"].items() if diffs}
    assert not differ, json.dumps(differ, indent=1)
    direct = "direct" in (REPO / "values-examples" / f"{preset}.yaml").read_text()
    assert report["executors"] == (["direct"] if direct else ["isolated_warm"])


def test_the_outputs_hold_numpy_arrays_and_scalars(reference):
    """The plain loop's pickles hold numpy arrays and scalars (what the restricted unpickler
    must let through), not plain lists: else the comparison above would not test decoding
    (drive.py compares types exactly). The test process has no numpy: bytes are checked."""
    data = (reference / f"realmodels.ssir:simulate-{FIRST_SEED}.pkl").read_bytes()
    assert b"numpy" in data and b"_reconstruct" in data and b"scalar" in data
