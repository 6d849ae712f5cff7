"""End to end: N no-op sims through the client API on a local cluster started from the
chart rendered with values-examples/prod-warm.yaml (the embedded local mode: the same
worker command and MODELOPS_* environment a pod gets), against plain ``client.map`` of the
same function on the same cluster. Rounds alternate the two, after a warm-up that leaves a
warm process and a cached venv in every worker process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from modelops_runtime.bundles import pack
from modelops_runtime.client import submit
from modelops_runtime.local.cluster.launch import plan
from modelops_runtime.local.cluster.render import render_cluster
from modelops_runtime.local.cluster.supervise import LocalCluster
from modelops_runtime.models import SimTask
from modelops_runtime.worker.hooks.metrics import worker_figures

from common import NOOP_MODEL, Samples, Workspace
from shared import write_bundle

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "values-examples" / "prod-warm.yaml"


def _as_main_function(path: Path, name: str):
    """The bundle's function, defined as a script's ``__main__`` code is: Dask then ships
    it by value (cloudpickle), as it does for a function in a user's notebook."""
    namespace = {"__name__": "__main__"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[name]


def _quiet(msg: str) -> None:
    print(f"  [local cluster] {msg}", file=sys.stderr, flush=True)


def run(ws: Workspace, *, smoke: bool) -> dict[str, Any]:
    sims = 300 if smoke else 10_000
    rounds = 1 if smoke else 2
    sets = ["worker.processes=2"] if smoke else []
    state = ws.root / "local-state"
    # a user's own values file names the bundle repository (the chart has no default);
    # local mode points the workers at its own, where the bundle is packed below
    own = [f"bundles.repo=file://{state / 'bundle-repo'}"]
    rendered = render_cluster([PRESET], own + sets)
    launch = plan(rendered, state)
    src = write_bundle(ws.root / "src" / "e2e", {"model.py": NOOP_MODEL})
    launch.bundle_repo.mkdir(parents=True, exist_ok=True)
    ref = pack(src, str(launch.bundle_repo))
    noop = _as_main_function(src / "model.py", "noop")

    samples = {"prod-warm (modelops submit)": Samples(), "plain client.map": Samples()}
    with LocalCluster(launch, echo=_quiet) as cluster:
        client = cluster.client()
        nworkers = len(client.scheduler_info(n_workers=-1)["workers"])

        def modelops(tag: str, n: int) -> None:
            tasks = [SimTask(bundle=ref, entrypoint="model:noop", seed=i) for i in range(n)]
            futures = submit(client, tasks, study=tag)
            results = client.gather(futures)
            assert len(results) == n and results[0].executor == "isolated_warm"
            del futures, results

        def plain(tag: str, n: int) -> None:
            futures = client.map(noop, [{}] * n, range(n),
                                 key=[f"plain-{tag}-{i}" for i in range(n)])
            results = client.gather(futures)
            assert len(results) == n
            del futures, results

        # warm-up: every worker process builds/loads the venv and starts its warm process
        modelops("warmup", 20 * nworkers)
        plain("warmup", 20 * nworkers)
        for r in range(rounds):
            for name, fn in (("prod-warm (modelops submit)", modelops), ("plain client.map", plain)):
                t0 = time.perf_counter()
                fn(f"r{r}", sims)
                samples[name].times.append(time.perf_counter() - t0)
        pools = {addr: {k: fig["stats"][k] for k in ("tasks", "spawns", "reuses")}
                 for addr, fig in client.run(worker_figures).items()}
    out: dict[str, Any] = {name: {"median_s": s.median, "per_task_s": s.median / sims,
                                  "n": len(s.times)} for name, s in samples.items()}
    out.update(sims=sims, worker_processes=nworkers, threads=rendered.nthreads,
               preset=PRESET.name, sets=sets, pools=pools)
    return out


if __name__ == "__main__":  # quick look: python bench/endtoend.py [--smoke]
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        print(json.dumps(run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv), indent=1))
