"""`modelops-runtime local --results-store` and `modelops-runtime results` through the real
CLI on the real chart: a study whose client is SIGKILLed halfway is rerun and its store
equals an uninterrupted run's (same rows, same aggregates, no (set, seed) twice, none
missing); the same with the scheduler and workers SIGKILLed instead (`local up` /
`local run`); a store of other inputs is refused with one line before anything starts;
the store read back by `results` (summary, --table)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from e2e_support import assert_nothing_left, preset
from modelops_runtime.client.store import ResultsStore
from support.bundles import write_bundle

SETS, SEEDS = 4, 500         # 2,000 no-op runs (CI: ~10 s per study on 2 cores)
MODEL = '''
import time

def simulate(params, seed):
    time.sleep(0.002)          # slow enough that a kill lands mid-study
    return {"value": params["x"] * seed, "seed": seed}

def total(outputs):
    return {"total": sum(o["value"] for o in outputs), "n": len(outputs)}

def best(sets):
    return {"best": max(sets, key=lambda s: s["aggregate"]["total"])["set_id"],
            "runs": sum(s["runs"] for s in sets)}
'''
DIRECT = ["--set", "worker.executor.type=direct", "--set", "worker.processes=2",
          "--set", "worker.threads=1"]


def _study(tmp_path, x=(1.0, 2.0, 3.0, 4.0)) -> str:
    bundle = write_bundle(tmp_path / "noop", {"model.py": MODEL, "requirements.txt": ""})
    path = tmp_path / f"study-{len(list(tmp_path.glob('study-*')))}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "noop", "bundle": str(bundle), "entrypoint": "model:simulate",
        "aggregate": "model:total", "aggregate_sets": "model:best", "grid": {"x": list(x)},
        "seeds_per_set": SEEDS}))
    return str(path)


def _runs_in(url) -> int:
    try:
        doc = json.loads((url / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(p["rows"] for p in doc["parts"])


def _wait_half(run, url, timeout=240.0) -> int:
    """Bounded wait until the store holds about half the study's runs."""
    total, deadline = SETS * SEEDS, time.monotonic() + timeout
    while (n := _runs_in(url)) < total // 2:
        assert run.popen.poll() is None, f"the study ended before half:\n{run.output}"
        assert time.monotonic() < deadline, f"no half of the study in {timeout:.0f}s:\n{run.output}"
        time.sleep(0.05)
    return n


def _content(url):
    store = ResultsStore.open(str(url))
    rows = store.table().sort_by([("set_index", "ascending"), ("seed", "ascending")])
    keep = [c for c in rows.column_names if c not in
            ("pid", "process_task_count", "duration_s", "worker", "venv_cache_hit")]
    rows = rows.select(keep).to_pylist()
    keys = [(r["set_id"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)), "a (set, seed) is in the store twice"
    assert len(keys) == SETS * SEEDS, f"{SETS * SEEDS - len(keys)} runs missing"
    aggs = store.aggregates()
    return rows, ({k: v["aggregate"]["outputs"] for k, v in aggs["sets"].items()},
                  aggs["across"]["aggregate"]["outputs"])


@pytest.fixture
def baseline(local_cli, local_env, tmp_path):
    """An uninterrupted run's store (and its study file)."""
    study, url = _study(tmp_path), tmp_path / "whole"
    run = local_cli.run(["-f", preset("prod-warm").file, *DIRECT, "--study", study,
                         "--state-dir", tmp_path / "state", "--results-store", url,
                         "--no-progress"], local_env())
    assert run.popen.returncode == 0, run.output
    assert "resuming" not in run.stdout
    return study, _content(url)


def test_a_study_killed_halfway_resumes_to_the_same_store(baseline, local_cli, local_env,
                                                         tmp_path):
    study, whole = baseline
    url = tmp_path / "killed"
    args = ["-f", preset("prod-warm").file, *DIRECT, "--study", study, "--state-dir",
            tmp_path / "state2", "--results-store", url]
    first = local_cli.start(args, local_env())
    done = _wait_half(first, url)
    os.killpg(first.popen.pid, signal.SIGKILL)          # the client and its cluster
    first.wait(30)
    first.cleanup()
    again = local_cli.run(args, local_env())
    assert again.popen.returncode == 0, again.output
    resumed = [ln for ln in again.stdout.splitlines() if ln.startswith("resuming from")]
    assert len(resumed) == 1, again.output
    n = int(resumed[0].split(": ")[1].split(" of ")[0].replace(",", ""))
    assert done <= n < SETS * SEEDS, resumed
    assert resumed[0].endswith(f"of {SETS * SEEDS:,} runs done, {SETS * SEEDS - n:,} to go")
    assert _content(url) == whole, "the resumed store differs from an uninterrupted run's"
    assert_nothing_left(again)
    # not a terminal: plain progress lines, the whole study counted (resumed runs included)
    assert "\r" not in again.stderr
    assert f"noop: {SETS * SEEDS:,} of {SETS * SEEDS:,} runs done (100.0 %), 0 failed, sets " \
        f"complete {SETS}/{SETS}" in again.stderr, again.output

    # `results` reads it back: the summary, one table
    table = tmp_path / "all.parquet"
    shown = local_cli.run([url, "--table", table], local_env(), command="results")
    assert shown.popen.returncode == 0, shown.output
    assert f"runs: {SETS * SEEDS:,} of {SETS * SEEDS:,} done (0 failed), 0 missing" in shown.stdout
    assert "aggregate (model:best across sets):" in shown.stdout
    assert pq.read_table(table).num_rows == SETS * SEEDS

    # other inputs against this store: one line, before anything starts, nothing changed
    before = sorted(p.name for p in (url / "parts").iterdir())
    other = local_cli.run(["-f", preset("prod-warm").file, *DIRECT, "--study",
                           _study(tmp_path, x=(1.0, 2.5, 3.0, 4.0)), "--state-dir",
                           tmp_path / "state3", "--results-store", url], local_env())
    assert other.popen.returncode == 2, other.output
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: results store {url} holds runs of other inputs: param 'x' of set 2 of 4 "
        "differs: 2.0 in the store, 2.5 in this study; nothing was run. Give this study a new "
        "store, or rerun the study that wrote it")
    assert "local mode: helm template" not in other.stdout
    assert sorted(p.name for p in (url / "parts").iterdir()) == before


def test_scheduler_and_workers_killed_halfway_then_resumed(baseline, local_cli, local_env,
                                                            tmp_path):
    study, whole = baseline
    url, state = tmp_path / "cluster-killed", tmp_path / "state-bg"
    up = ["up", "-f", preset("prod-warm").file, *DIRECT, "--state-dir", state]
    started = local_cli.run(up, local_env())
    assert started.popen.returncode == 0, started.output
    run_args = ["run", "--study", study, "--state-dir", state, "--results-store", url,
                "--no-progress"]
    first = local_cli.start(run_args, local_env())
    _wait_half(first, url)
    me = psutil.Process(first.popen.pid)
    cluster = [p for p in psutil.process_iter(["cmdline"])
               if str(state) in " ".join(p.info["cmdline"] or []) and p.pid != me.pid
               and "dask" in " ".join(p.info["cmdline"] or [])]
    assert cluster, "no scheduler or worker process of the cluster kept up was found"
    for p in cluster:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(cluster, timeout=30)
    assert first.wait(120) != 0, first.output            # its cluster is gone
    assert f"The results store {url} holds " in first.stderr, first.output
    assert f"of {SETS * SEEDS:,} runs: run the same study again with it to resume." \
        in first.stderr, first.output
    local_cli.run(["down", "--state-dir", state], local_env())
    restarted = local_cli.run(up, local_env())
    assert restarted.popen.returncode == 0, restarted.output
    again = local_cli.run(run_args, local_env())
    assert again.popen.returncode == 0, again.output
    assert "resuming from" in again.stdout, again.output
    assert _content(url) == whole, "the resumed store differs from an uninterrupted run's"
    down = local_cli.run(["down", "--state-dir", state], local_env())
    assert down.popen.returncode == 0, down.output


def test_bad_store_urls_are_one_line_before_anything_starts(local_cli, local_env, tmp_path):
    study = _study(tmp_path)
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", study, "--state-dir",
                         tmp_path / "state", "--results-store", "gs://bucket/sweep"],
                        local_env())
    assert run.popen.returncode == 1, run.output
    assert run.stderr.strip().splitlines() == [
        "error: results store gs://bucket/sweep: the gs:// filesystem needs a package that "
        "is not installed here (Please install gcsfs to access Google Storage); install it "
        "(e.g. pip install s3fs for s3://, gcsfs for gs://, adlfs for az://) or give a "
        "local directory"]
    assert "local mode: helm template" not in run.stdout
    shown = local_cli.run([tmp_path], local_env(), command="results")
    assert shown.popen.returncode == 1, shown.output
    assert shown.stderr.strip() == (f"error: {tmp_path} is not a results store (no "
                                    "manifest.json); give the URL a study wrote with "
                                    "--results-store")
