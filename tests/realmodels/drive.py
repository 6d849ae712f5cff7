"""Runs the real models on one local cluster started from a preset, and compares every
output with the plain loop's, seed by seed (run as a subprocess by test_real_models.py).

    python drive.py JOB.json      # prints one JSON report on stdout

- Covers: the cluster `modelops-runtime local` would start for the preset (the chart
  rendered, processes planned in the state directory), every model × seed submitted as a
  study, and the comparison with the plain loop's pickles (numpy arrays by dtype, shape and
  value; numpy scalars by type and value; bytes by bytes).
- Does not: build venvs or the reference (the test does), judge the result (the test does).
- Needs numpy in this interpreter (PYTHONPATH: the stand-in worker image), as the client
  must unpickle the numpy outputs the workers decoded.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np

from modelops_runtime.bundles import pack
from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study
from modelops_runtime.local.cluster.launch import plan
from modelops_runtime.local.cluster.render import render_cluster
from modelops_runtime.local.cluster.supervise import LocalCluster


def differences(got, want, where: str = "outputs") -> list[str]:
    """Every place ``got`` differs from ``want`` (empty: equal, types included)."""
    if type(got) is not type(want):
        return [f"{where}: {type(got).__name__} instead of {type(want).__name__}"]
    if isinstance(want, dict):
        if set(got) != set(want):
            return [f"{where}: keys {sorted(got)} instead of {sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], f"{where}[{k!r}]")]
    if isinstance(want, (list, tuple)):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items instead of {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in
                differences(g, w, f"{where}[{i}]")]
    if isinstance(want, np.ndarray):
        if got.dtype != want.dtype or got.shape != want.shape:
            return [f"{where}: {got.dtype}{got.shape} instead of {want.dtype}{want.shape}"]
        return [] if np.array_equal(got, want, equal_nan=want.dtype.kind in "fc") else \
            [f"{where}: values differ (first at {int(np.argmax(got != want))})"]
    if isinstance(want, float) and want != want:
        return [] if got != got else [f"{where}: {got!r} instead of nan"]
    return [] if got == want else [f"{where}: {got!r} instead of {want!r}"]


def main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    state = Path(job["state"])
    launch = plan(render_cluster([job["preset"]], [f"bundles.repo=file://{state / 'bundle-repo'}"],
                                 chart=Path(job["chart"])), state)
    launch.bundle_repo.mkdir(parents=True, exist_ok=True)
    ref = pack(Path(job["bundle"]), str(launch.bundle_repo))
    report: dict = {"runs": {}, "failures": [], "executors": set()}
    with LocalCluster(launch, echo=lambda msg: None) as cluster:
        client = cluster.client()
        subs = {model: submit_study(client, StudyPlan(
                    name=model.replace(":", "_"), bundle=ref, entrypoint=model,
                    sets=[ParamSet.of(job["params"].get(model, {}))],
                    seeds=Seeds(first=job["first_seed"], count=job["seeds"])))
                for model in job["models"]}
        for model, sub in subs.items():
            res = gather_study(client, sub, progress=False)
            for failure in res.failures:
                report["failures"].append(f"{model} seed {failure.seed}: {failure.error_type}: "
                                          f"{failure.message}")
            for seed, result in res.sets[0].results.items():
                want = pickle.loads(Path(job["reference"], f"{model}-{seed}.pkl").read_bytes())
                report["runs"][f"{model} {seed}"] = differences(result.outputs, want)
                report["executors"].add(result.executor)
    report["executors"] = sorted(report["executors"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
