"""Warm-up on scale-up: pods the autoscaler adds for a study's backlog build the study's
venv once per pod, however many Dask worker processes and threads take its tasks at once
(no stampede of cold uv builds), and none at all when the venv cache is a volume the pods
share (worker.cache.venvsExistingClaim) that already holds it. Counted by the workers' own
venv_builds counters (modelops-runtime stats), read while every pod still runs."""

from __future__ import annotations

import threading

import psutil
import pytest

from loopkit import release, wait_replicas, write_study
from modelops_runtime.client.cluster_stats import cluster_stats
from modelops_runtime.local.study.run import run_study
from modelops_runtime.local.study.studyfile import Study
from test_autoscaling_loop import assert_eventually

SIMS = 120
MAX = 3
PROCESSES, THREADS = 2, 2


def per_pod(rel, client, figure: str = "venv_builds") -> dict[str, int]:
    """A counter (venv_builds, tasks) summed over each running pod's Dask worker
    processes."""
    stats = cluster_stats(client).workers
    pids = client.run(lambda: __import__("os").getpid())
    owner = {}
    for pod, proc in rel.kubelet.pods.items():
        root = psutil.Process(proc.popen.pid)
        tree = {root.pid, *(c.pid for c in root.children(recursive=True))}
        owner.update({addr: pod for addr, pid in pids.items() if pid in tree})
    counts = dict.fromkeys(rel.kubelet.pods, 0)
    for addr, s in stats.items():
        counts[owner[addr]] += getattr(s, figure)
    return counts


@pytest.mark.parametrize("cache", ["emptyDir", "shared"])
def test_scale_up_builds_the_venv_once_per_pod(keda_plane, tmp_path, cache):
    plane, _ = keda_plane
    study = Study.load(write_study(tmp_path, sims=SIMS, short=1.0, long=1.0, tail=0))
    sets = [f"worker.processes={PROCESSES}", f"worker.threads={THREADS}"]
    if cache == "shared":
        sets.append("worker.cache.venvsExistingClaim=venvs")
    with release(plane, tmp_path, f"warmup-{cache.lower()}", tmp_path / "wheels",
                 min_replicas=1, max_replicas=MAX, down_window=600, sets=sets) as rel:
        from distributed import Client

        wait_replicas(rel, lambda n: n == 1, "the idle release at minReplicas 1")
        client = Client(rel.kubelet.cluster.address, timeout=60)
        try:
            rel.kubelet.cluster.wait_for_workers(client, PROCESSES, timeout=180)
            first = rel.kubelet.running()
            # the first pod builds the study's venv before the backlog arrives
            warm = Study.load(write_study(tmp_path / "warm", sims=PROCESSES * THREADS,
                                          short=0.1, long=0.1, tail=0))
            run_study(client, warm, rel.kubelet.plan.bundle_repo, progress=False, batch=1)
            assert per_pod(rel, client) == {first[0]: 1}
            outcome = {}
            thread = threading.Thread(target=lambda: outcome.update(run=run_study(
                client, study, rel.kubelet.plan.bundle_repo, progress=False, batch=1)))
            thread.start()
            wait_replicas(rel, lambda n: n == MAX, f"the HPA to scale up to {MAX} pods",
                          timeout=240)
            thread.join(600)
            assert "run" in outcome, "the study did not finish\n" + rel.describe()
            assert_eventually(lambda: len(rel.kubelet.running()) == MAX,
                              f"{MAX} worker pods running", rel)
            rel.kubelet.cluster.wait_for_workers(client, MAX * PROCESSES, timeout=180)
            builds, tasks = per_pod(rel, client), per_pod(rel, client, "tasks")
        finally:
            client.close(timeout=10)
        run = outcome["run"]
        assert not run.failures and sorted(r.seed for r in run.sims) == list(range(SIMS))
        added = {pod: n for pod, n in builds.items() if pod not in first}
        assert len(added) == MAX - 1, builds
        assert all(tasks[pod] > 0 for pod in added), f"a new pod ran no task: {tasks}"
        # one build per new pod (its own emptyDir cache), or none (the shared cache has it)
        want = 1 if cache == "emptyDir" else 0
        assert added == dict.fromkeys(added, want), builds
        assert builds[first[0]] == 1, builds
