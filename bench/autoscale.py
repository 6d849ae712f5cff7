"""Warm-up on scale-up (issue #28): the time from a worker pod the autoscaler added starting
to its first finished task, with a cold venv cache (the chart's default emptyDir: the new
pod builds the study's venv, numpy from the locked wheelhouse, with uv) and with a warm one
(worker.cache.venvsExistingClaim: a volume the pods share, where the first pod built it).

The whole loop runs as in tests/cluster/autoscaling: the control plane, KEDA's operator
and metrics server, the HPA controller, the rendered scheduler, a kubelet stand-in that
runs one `dask worker` per pod. Each round installs one release per case, the cases
interleaved (cold, warm, cold, warm, ...), and submits the same backlog to both. Run alone
(not part of `make bench`, it needs `make tool-k8s tool-keda wheelhouse`):
``.venv/bin/python bench/autoscale.py [--rounds N]``; writes bench/autoscale.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from datetime import date
from pathlib import Path

import psutil

import shared  # noqa: F401 - puts tests/ on sys.path
from machine import describe

HERE = Path(__file__).resolve().parent
sys.path.append(str(shared.REPO / "tests" / "cluster" / "autoscaling"))

from loopkit import release, wait_replicas  # noqa: E402
from support import controlplane, keda  # noqa: E402
from support.wheelhouse import WHEELHOUSE, require_wheelhouse  # noqa: E402

NUMPY = "numpy==2.4.6"   # ci/wheelhouse/requirements.lock's
SIMS, SECONDS = 40, 1.0   # the backlog: one pod alone needs SIMS × SECONDS
MODEL = """
import os
import time

import numpy


def simulate(params, seed):
    time.sleep(params["seconds"])
    return {"end": time.time(), "pid": os.getpid(), "sum": float(numpy.arange(seed + 1).sum())}
"""


def write_study(root: Path, sims: int) -> Path:
    bundle = root / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "model.py").write_text(textwrap.dedent(MODEL).lstrip())
    (bundle / "requirements.txt").write_text(NUMPY + "\n")
    (root / "study.yaml").write_text(f"name: warmup\nbundle: bundle\nentrypoint: model:simulate\n"
                                     f"params: {{seconds: {SECONDS}}}\nsims: {sims}\n")
    return root


def one_case(plane, tmp: Path, name: str, shared_cache: bool) -> dict:
    from distributed import Client
    from modelops_runtime.client.cluster_stats import cluster_stats
    from modelops_runtime.local.study.run import run_study
    from modelops_runtime.local.study.studyfile import Study

    sets = ["worker.processes=1", "worker.threads=1"]
    if shared_cache:
        sets.append("worker.cache.venvsExistingClaim=venvs")
    with release(plane, tmp, name, WHEELHOUSE, min_replicas=1, max_replicas=2,
                 down_window=600, sets=sets) as rel:
        wait_replicas(rel, lambda n: n == 1, "the idle release")
        client = Client(rel.kubelet.cluster.address, timeout=60)
        try:
            rel.kubelet.cluster.wait_for_workers(client, 1, timeout=180)
            first = rel.kubelet.running()[0]
            run_study(client, Study.load(write_study(tmp / "warm", 1)),
                      rel.kubelet.plan.bundle_repo, progress=False, batch=1)
            out: dict = {}
            thread = threading.Thread(target=lambda: out.update(run=run_study(
                client, Study.load(write_study(tmp / "backlog", SIMS)),
                rel.kubelet.plan.bundle_repo, progress=False, batch=1)))
            thread.start()
            wait_replicas(rel, lambda n: n == 2, "the scale-up to 2 pods", timeout=240)
            thread.join(900)
            new = next(p for p in rel.kubelet.running() if p != first)
            started = next(e.wall for e in rel.kubelet.events
                           if e.what == "start" and e.pod == new)
            root = psutil.Process(rel.kubelet.pods[new].popen.pid)
            tree = {root.pid, *(c.pid for c in root.children(recursive=True))}
            addrs = {a for a, pid in client.run(os.getpid).items() if pid in tree}
            builds = sum(s.venv_builds for a, s in cluster_stats(client).workers.items()
                         if a in addrs)
        finally:
            client.close(timeout=10)
    ends = [r.result.outputs["end"] for r in out["run"].sims if r.result.worker in addrs]
    if not ends:
        raise RuntimeError(f"{name}: the new pod finished no task of the backlog")
    return {"first_task_s": min(ends) - started, "tasks": len(ends), "builds": builds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    require_wheelhouse()
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp, \
            controlplane.ControlPlane(kcm_args=("--horizontal-pod-autoscaler-sync-period=1s",)
                                      ) as plane, keda.Keda(plane):
        for i in range(args.rounds):
            for case in ("cold", "warm"):
                r = one_case(plane, Path(tmp) / f"{case}-{i}", f"{case}-{i}", case == "warm")
                results[case].append(r)
                print(f"round {i} {case}: {r}", flush=True)
    load_after = os.getloadavg()
    cold = statistics.median(r["first_task_s"] for r in results["cold"])
    warm = statistics.median(r["first_task_s"] for r in results["warm"])
    m = describe()
    def row(case: str, rs: list[dict]) -> str:
        each = ", ".join("%.1f" % r["first_task_s"] for r in rs)
        median = statistics.median(r["first_task_s"] for r in rs)
        builds = ", ".join(str(r["builds"]) for r in rs)
        return f"| {case} | {each} | {median:.1f} | {builds} |"
    rows = "\n".join(row(case, rs) for case, rs in results.items())
    (HERE / "autoscale.md").write_text(f"""\
# Warm-up on scale-up: cold vs warm venv cache (bench/autoscale.py)

A backlog of {SIMS} runs of {SECONDS:.0f} s (a bundle needing {NUMPY}, installed by uv from
the locked wheelhouse) submitted to a release at 1 pod; KEDA and the HPA add a second pod.
Measured: from the new pod's `dask worker` starting to its first finished run. cold: the
chart's default emptyDir venv cache (the new pod builds the venv); warm:
worker.cache.venvsExistingClaim, a cache the pods share where the first pod built it.
{args.rounds} rounds, the cases interleaved.

| venv cache | first finished run after the pod started, s (each round) | median s | uv builds on the new pod |
|---|---|---|---|
{rows}

- cold vs warm: **{cold / warm:.2f}×** the time to the new pod's first finished run

Measured {date.today()} on {m['cpu']}, {m['cores']}, {m['memory']}; load average
{load_before[0]:.1f} before and {load_after[0]:.1f} after (the machine is shared with other
engineers' builds and tests).
""")
    print((HERE / "autoscale.md").read_text())


if __name__ == "__main__":
    main()
