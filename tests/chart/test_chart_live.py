"""The rendered commands work with the real runtime and the real `dask worker`.

Rendering alone cannot tell whether `dask worker` accepts the args, whether the runtime
accepts the MODELOPS_* values, or what happens to the fixed dashboard port with several
processes per pod. These tests run the rendered worker command and the helm test script
as real processes on 127.0.0.1 (pod paths and ports rewritten, nothing else).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chartkit import PRESETS, render
from modelops_runtime.config import ExecutorType, RuntimeConfig, parse_bytes
from support.cluster import BIN, Proc, tail, wait_for


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize("preset", PRESETS)
def test_the_runtime_accepts_what_each_preset_renders(preset):
    """The chart's env is the runtime's whole configuration: it must parse, to the mode."""
    worker = render("helm3", preset).container("worker")
    env = _env(worker)
    config = RuntimeConfig.from_env(env)
    assert config.executor_type is ExecutorType(env["MODELOPS_EXECUTOR_TYPE"])
    assert config.force_fresh_venv is (env["MODELOPS_FORCE_FRESH_VENV"] == "true")
    assert config.max_process_reuse == int(env["MODELOPS_MAX_PROCESS_REUSE"])
    assert config.pool_memory_bytes == parse_bytes(env["MODELOPS_POOL_MEMORY_BYTES"])
    assert str(config.venvs_dir) == env["MODELOPS_VENVS_DIR"]
    assert set(env) - {"UV_CACHE_DIR"} <= set(RuntimeConfig.env_names())


def test_the_runtime_accepts_every_optional_value():
    values = """
worker:
  logLevel: DEBUG
  executor: {memLimitPerProcess: 512Mi, taskTimeout: 30, envPassthrough: [A, B_2]}
bundles: {repo: "s3://bucket/bundles"}
"""
    config = RuntimeConfig.from_env(_env(render("helm3", values=values).container("worker")))
    assert config.mem_limit_bytes == 512 * 2**20
    assert config.task_timeout == 30
    assert config.env_passthrough == ["A", "B_2"]
    assert config.bundle_repo == "s3://bucket/bundles"
    assert config.log_level.value == "DEBUG"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def test_rendered_worker_and_helm_test_run_on_a_real_cluster(dask_cluster, tmp_path: Path):
    out = render("helm3", "prod-warm", sets=("worker.processes=2",))
    worker = out.container("worker")
    cluster, client = dask_cluster(workers=0, wait=False)

    # pod → local rewrites: scheduler address, dashboard port, volume paths
    port = _free_port()
    args = list(worker["args"])
    assert args[1].startswith("tcp://") and args[args.index("--dashboard-address") + 1] == ":8788"
    args[1] = cluster.address
    args[args.index("--dashboard-address") + 1] = f"127.0.0.1:{port}"
    env = {k: v.replace("/var/cache/modelops", str(tmp_path / "cache"))
           .replace("/var/lib/modelops", str(tmp_path / "lib")) for k, v in _env(worker).items()}
    log = tmp_path / "rendered-worker.log"
    popen = subprocess.Popen([str(BIN / worker["command"][0]), *args],
                             env={**cluster.env, **env}, stdout=log.open("wb"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    cluster.workers.append(Proc("rendered-worker", popen, log))  # the fixture stops it
    cluster.wait_for_workers(client, 2, timeout=120)

    # process 0 of the pod serves /health and /metrics on the fixed port; dask moves the
    # other processes' dashboards to free ports (the chart's documented port design)
    assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/health") == "ok", 60,
                    "the worker dashboard's /health", on_fail=lambda: tail(log))
    assert "dask_worker_" in _get(f"http://127.0.0.1:{port}/metrics")
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    dashboards = sorted(w["services"]["dashboard"] for w in info)
    assert len(dashboards) == 2 and port in dashboards and len(set(dashboards)) == 2
    assert {w["resources"].get("aggregation") for w in info} == {1}
    assert {w["nthreads"] for w in info} == {1}
    assert {w["memory_limit"] for w in info} == {2**30}

    # the helm test pod's script, with its rendered env, against this cluster
    pod = out.one("Pod")["spec"]["containers"][0]
    test_env = {**cluster.env, **_env(pod), "SCHEDULER_ADDRESS": cluster.address,
                "EXPECTED_PROCESSES": "2", "TEST_TIMEOUT": "120"}
    ok = subprocess.run([sys.executable, "-c", pod["args"][0]],
                        env=test_env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr + tail(log)
    assert ok.stdout.strip() == ("ok: 2 worker processes connected, a task ran with executor "
                                 "isolated_warm")

    # and it fails, saying why, when the workers run another mode than the release asks for
    wrong = subprocess.run([sys.executable, "-c", pod["args"][0]],
                           env={**test_env, "EXPECTED_EXECUTOR": "direct"},
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0
    assert "the worker runs executor 'isolated_warm', the release asks for 'direct'" in \
        wrong.stderr
