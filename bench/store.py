"""Results stores (issue #25): a study of no-op runs (batched) through ``submit_study``
with a store, its client in its own process so that its peak RSS is its own.

* memory — client peak RSS (``ru_maxrss``) of a 10,000-run study with a store vs a study
  of ``--runs`` runs (default 1,000,000) with a store: the target is within 1.2×.
* throughput — the ``--runs`` study with a store vs the same study without one (the
  client then holds every result): runs per second, the target is within 0.9×.

One local cluster from values-examples/prod-warm.yaml serves every case, in turn. Run
alone: ``.venv/bin/python bench/store.py [--runs N] [--smoke]``; writes bench/store.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import NOOP_MODEL
from endtoend import PRESET, _quiet
from shared import write_bundle

HERE = Path(__file__).resolve().parent
SETS = 10

CLIENT = r'''
import json, resource, sys, time
from distributed import Client
from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study

address, ref, runs, store, name = sys.argv[1:6]
runs = int(runs)
plan = StudyPlan(name=name, bundle=ref, entrypoint="model:noop",
                 sets=[ParamSet.of({"k": i}, index=i) for i in range(10)],
                 seeds=Seeds(count=runs // 10))
with Client(address) as client:
    t0 = time.perf_counter()
    result = gather_study(client, submit_study(client, plan, store=store or None),
                          progress=False)
    wall = time.perf_counter() - t0
    done = (result.ok + result.failed) if store else result.runs
    assert done == runs, (done, runs)
    print(json.dumps({"wall_s": wall, "runs": runs, "runs_per_s": runs / wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def _client(address: str, ref: str, runs: int, store: str, name: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CLIENT, address, ref, str(runs), store, name],
                          capture_output=True, text=True, timeout=6 * 3600)
    if proc.returncode:
        raise RuntimeError(f"client failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(root: Path, *, runs: int, smoke: bool) -> dict[str, Any]:
    from modelops_runtime.bundles import pack
    from modelops_runtime.local.cluster.launch import plan
    from modelops_runtime.local.cluster.render import render_cluster
    from modelops_runtime.local.cluster.supervise import LocalCluster

    small = 1_000 if smoke else 10_000
    runs = 5_000 if smoke else runs
    state = root / "local-state"
    rendered = render_cluster([PRESET], [f"bundles.repo=file://{state / 'bundle-repo'}"])
    launch = plan(rendered, state)
    src = write_bundle(root / "src" / "noop", {"model.py": NOOP_MODEL})
    launch.bundle_repo.mkdir(parents=True, exist_ok=True)
    ref = pack(src, str(launch.bundle_repo))
    out: dict[str, Any] = {"runs": runs, "small": small}
    with LocalCluster(launch, echo=_quiet) as cluster:
        address = cluster.address
        _client(address, ref, 1_000, "", "warmup")
        out["store_small"] = _client(address, ref, small, str(root / "small"), "small")
        out["store_big"] = _client(address, ref, runs, str(root / "big"), "big")
        out["no_store_big"] = _client(address, ref, runs, "", "plain")
    out["rss_ratio"] = out["store_big"]["peak_rss_mb"] / out["store_small"]["peak_rss_mb"]
    out["throughput_ratio"] = out["store_big"]["runs_per_s"] / out["no_store_big"]["runs_per_s"]
    return out


def markdown(r: dict[str, Any]) -> str:
    def row(name: str, case: dict) -> str:
        return (f"| {name} | {case['runs']:,} | {case['wall_s']:.1f} | "
                f"{case['runs_per_s']:,.0f} | {case['peak_rss_mb']:.0f} |")

    return "\n".join([
        "# Results store: bounded client memory, throughput (bench/store.py)", "",
        f"No-op runs, batched, {SETS} sets, through `submit_study` on a local prod-warm "
        "cluster; each client in its own process (peak RSS = its `ru_maxrss`).", "",
        "| case | runs | wall s | runs/s | client peak RSS MB |", "|---|---|---|---|---|",
        row("store", r["store_small"]), row("store", r["store_big"]),
        row("no store (client holds every result)", r["no_store_big"]), "",
        f"- client peak RSS, {r['runs']:,} vs {r['small']:,} runs with a store: "
        f"**{r['rss_ratio']:.2f}×** (target ≤ 1.2×)",
        f"- throughput with a store vs without, {r['runs']:,} runs: "
        f"**{r['throughput_ratio']:.2f}×** (target ≥ 0.9×)", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        result = run(root, runs=args.runs, smoke=args.smoke)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if not args.smoke:
        (HERE / "store.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
