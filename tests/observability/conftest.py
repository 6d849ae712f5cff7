"""One real local cluster shared by this folder's tests: a `dask scheduler` and three `dask
worker` commands, each with its own MODELOPS_* environment, exactly as pods would differ:

* ``warm``   — 2 worker processes, executor isolated_warm (the production mode; warm
  processes retire after 2 tasks),
* ``direct`` — 1 worker process, executor direct,
* ``bare``   — 1 worker process started without the modelops preload.

Starting one cluster for the folder keeps it fast on a small machine; every test targets
its worker processes by name, and the cluster is always torn down (also on failure).
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelops_runtime.client import run_simulation
from modelops_runtime.models import SimTask
from support.bundles import make_bundle
from support.cluster import ProcessCluster, base_env

NOOP_MODEL = '''
import os

def noop(params, seed):
    return {"seed": seed, "pid": os.getpid()}
'''


@dataclass
class Shared:
    cluster: ProcessCluster
    client: object
    bundle: str
    workers: dict[str, list[str]]  # worker command name → Dask worker addresses
    names: dict[str, str]          # Dask worker address → worker name (the `worker` label)

    def run_on(self, address: str, n: int, start_seed: int = 0) -> list:
        """Run ``n`` no-op simulations on one worker process; return the SimResults."""
        tasks = [SimTask(bundle=self.bundle, entrypoint="model:noop", seed=start_seed + i)
                 for i in range(n)]
        futures = [self.client.submit(run_simulation, t, workers=[address],
                                      allow_other_workers=False, pure=False) for t in tasks]
        return self.client.gather(futures)

    def dashboard_url(self, address: str) -> str:
        info = self.client.scheduler_info(n_workers=-1)["workers"][address]
        port = info["services"]["dashboard"]
        host = re.match(r"^\w+://([^:/]+)", address).group(1)
        return f"http://{host}:{port}/metrics"

    def scrape(self, address: str) -> dict[tuple[str, tuple], float]:
        """GET the worker's /metrics (its own dashboard server) → {(sample, labels): value}."""
        with urllib.request.urlopen(self.dashboard_url(address), timeout=30) as resp:
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@pytest.fixture(scope="package")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("observability")
    repo = root / "repo"
    bundle = make_bundle(root, repo, {"model.py": NOOP_MODEL})
    # the pods' scratch (/tmp in the chart): metrics files of `dask worker` commands that
    # were killed are removed by the next worker that starts there
    tmp = root / "tmp"
    orphan = _dead_command_dir(tmp)
    cluster = ProcessCluster(root=root, env=base_env(root, {"MODELOPS_BUNDLE_REPO": str(repo),
                                                            "TMPDIR": str(tmp)}))
    client = None
    try:
        cluster.start_scheduler()
        # a warm process retires after 2 tasks, so a few tasks show every kind of figure
        cluster.start_worker(nworkers=2, name="warm",
                             env={"MODELOPS_EXECUTOR_TYPE": "isolated_warm",
                                  "MODELOPS_MAX_PROCESS_REUSE": "2"})
        cluster.start_worker(nworkers=1, name="direct", env={"MODELOPS_EXECUTOR_TYPE": "direct"})
        cluster.start_worker(nworkers=1, name="bare", preload=False)
        client = cluster.client()
        cluster.wait_for_workers(client, 4, timeout=180)
        workers: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for addr, info in client.scheduler_info(n_workers=-1)["workers"].items():
            # `--name warm --nworkers 2` names the processes warm-0, warm-1
            names[addr] = str(info["name"])
            workers.setdefault(names[addr].rsplit("-", 1)[0], []).append(addr)
        assert sorted(workers) == ["bare", "direct", "warm"], workers
        ordered = {k: sorted(v, key=names.get) for k, v in workers.items()}
        assert not orphan.exists(), "a killed command's metrics directory was not removed"
        yield Shared(cluster, client, bundle, ordered, names)
    finally:
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - teardown continues whatever happened
                pass
        cluster.stop()



def _dead_command_dir(tmp: Path) -> Path:
    """A metrics directory as a killed `dask worker` command leaves it behind."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = tmp / "modelops-metrics" / str(gone.pid)
    orphan.mkdir(parents=True)
    (orphan / "12345.json").write_text("{}")
    return orphan
