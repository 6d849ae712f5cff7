"""The rendered commands work with the real runtime and the real `dask worker`.

Rendering alone cannot tell whether `dask worker` accepts the args, whether the runtime
accepts the MODELOPS_* values, or what happens to the fixed dashboard port with several
processes per pod. These tests run the rendered worker command and the helm test script
as real processes on 127.0.0.1 (pod paths and ports rewritten, nothing else).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chartkit import PRESETS, render
from modelops_runtime.config import ExecutorType, RuntimeConfig, parse_bytes
from support.cluster import BIN, Proc, tail, wait_for
from support.ports import HeldPort


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
    assert config.uv_cache_max_bytes == parse_bytes(env["MODELOPS_UV_CACHE_MAX_BYTES"]) == 2**31
    from modelops_runtime.worker.native import THREAD_VARS
    assert set(env) - {"UV_CACHE_DIR"} - set(THREAD_VARS) <= set(RuntimeConfig.env_names())
    assert {env[v] for v in THREAD_VARS} == {str(config.native_threads)}


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


@pytest.mark.parametrize("memory,expected", [
    ("1.5Gi", 3 * 2**29), ("2G", 2 * 10**9), ("1536M", 1536 * 10**6), ("524288Ki", 2**29),
    ("1073741824", 2**30), ("0.5Ti", 2**39), ("1000000k", 10**9),
])
def test_dask_and_the_runtime_read_every_memory_form_the_chart_accepts(memory, expected):
    """The chart passes memory values through as written: dask (--memory-limit) and the
    runtime (MODELOPS_POOL_MEMORY_BYTES, MODELOPS_MEM_LIMIT_BYTES) must read each form the
    chart's validation admits to the same number of bytes."""
    from dask.utils import parse_bytes as dask_parse_bytes

    values = (f"worker: {{memoryPerProcess: '{memory}', executor: "
              f"{{poolMemoryPerProcess: '{memory}', memLimitPerProcess: '{memory}'}}}}")
    worker = render("helm3", values=values).container("worker")
    args, env = worker["args"], _env(worker)
    assert dask_parse_bytes(args[args.index("--memory-limit") + 1]) == expected
    config = RuntimeConfig.from_env(env)
    assert config.pool_memory_bytes == expected
    assert config.mem_limit_bytes == expected


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


# the repository as a mounted volume (a path), as most clusters provide it
REPO_ON_A_VOLUME = ("bundles: {repo: /var/lib/modelops/bundle-repo, "
                    "volume: {persistentVolumeClaim: {claimName: bundles}}}")


def _helm_test(pod: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The helm test pod's script, as the pod runs it, with its rendered env + ``env``."""
    return subprocess.run([sys.executable, "-c", pod["args"][0]],
                          env={**_env(pod), **env}, capture_output=True, text=True,
                          timeout=300)


def test_rendered_worker_and_helm_test_run_on_a_real_cluster(dask_cluster, tmp_path: Path):
    out = render("helm3", "prod-warm", values=REPO_ON_A_VOLUME, sets=("worker.processes=2",))
    worker = out.container("worker")
    cluster, client = dask_cluster(workers=0, wait=False)

    # pod → local rewrites: scheduler address, dashboard port (held until dask listens on
    # it), volume paths
    held = HeldPort()
    port = held.port
    args = list(worker["args"])
    assert args[1].startswith("tcp://") and args[args.index("--dashboard-address") + 1] == ":8788"
    args[1] = cluster.address
    args[args.index("--dashboard-address") + 1] = f"127.0.0.1:{port}"
    env = {k: v.replace("/var/cache/modelops", str(tmp_path / "cache"))
           .replace("/var/lib/modelops", str(tmp_path / "lib")) for k, v in _env(worker).items()}
    repo = tmp_path / "lib" / "bundle-repo"
    assert env["MODELOPS_BUNDLE_REPO"] == str(repo)
    env["TMPDIR"] = str(tmp_path / "pod-tmp")  # a pod's /tmp is its own, gone with the pod
    (tmp_path / "pod-tmp").mkdir()
    log = tmp_path / "rendered-worker.log"
    popen = subprocess.Popen([str(BIN / worker["command"][0]), *args],
                             env={**cluster.env, **env}, stdout=log.open("wb"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    cluster.workers.append(Proc("rendered-worker", popen, log))  # the fixture stops it
    cluster.wait_for_workers(client, 2, timeout=120)
    held.release()

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
    addresses = sorted(client.nthreads())

    # the helm test pod's script against this cluster: the volume is not mounted yet, so
    # every worker process reports the repository it cannot reach, and the test fails
    pod = out.one("Pod")["spec"]["containers"][0]
    test_env = {**cluster.env, "SCHEDULER_ADDRESS": cluster.address,
                "EXPECTED_PROCESSES": "2", "TEST_TIMEOUT": "120"}
    missing = _helm_test(pod, test_env)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert missing.stderr.startswith("helm test failed: 2 problem(s) on the workers:\n  ")
    for address in addresses:
        assert (f"{address} cannot reach the bundle repository {str(repo)!r}: it does not "
                "exist. A path must be mounted with bundles.volume") in missing.stderr

    # "mounted": each worker process finds it and reports the executor its runtime built
    repo.mkdir(parents=True)
    ok = _helm_test(pod, test_env)
    assert ok.returncode == 0, ok.stderr + tail(log)
    assert ok.stdout.strip() == (
        "ok: 2 worker processes connected; on each, a task ran with executor isolated_warm "
        f"and found the bundle repository {repo}")

    # workers of another mode than the release asks for
    wrong = _helm_test(pod, {**test_env, "EXPECTED_EXECUTOR": "direct"})
    assert wrong.returncode == 1
    for address in addresses:
        assert (f"{address} runs executor 'isolated_warm', the release asks for 'direct' "
                "(worker.executor.type)") in wrong.stderr

    # fewer worker processes than the release runs: the script's own deadline, its message
    short = _helm_test(pod, {**test_env, "EXPECTED_PROCESSES": "3", "TEST_TIMEOUT": "3"})
    assert short.returncode == 1
    assert ("helm test failed: only 2 of 3 worker processes connected within 3s. Check the "
            "worker pods (kubectl get pods -n sims -l app.kubernetes.io/instance=mo,"
            "app.kubernetes.io/component=worker)") in short.stderr
    assert "raise tests.timeoutSeconds (now 3) and run helm test --timeout with at least " \
        "that + 60s" in short.stderr

    # a worker process with the rendered env but without the runtime (no --preload): the
    # executor comes from the runtime on the worker, not from the env the chart rendered
    bare = cluster.start_worker(preload=False, env=env, name="no-runtime")
    cluster.wait_for_workers(client, 3, timeout=120)
    (bare_address,) = set(client.nthreads()) - set(addresses)
    no_runtime = _helm_test(pod, test_env)
    assert no_runtime.returncode == 1, no_runtime.stdout + tail(bare.log)
    assert (f"{bare_address} has no modelops runtime: no modelops runtime in this Dask worker "
            "process") in no_runtime.stderr
    assert "cannot reach" not in no_runtime.stderr


def test_helm_test_fails_at_once_when_no_worker_runs():
    """worker.replicas=0: nothing to wait for; the script says so instead of connecting."""
    pod = render("helm3", sets=("worker.replicas=0",)).one("Pod")["spec"]["containers"][0]
    assert _env(pod)["EXPECTED_PROCESSES"] == "0"
    with HeldPort() as nobody:  # held, never listening: every connection is refused
        out = _helm_test(pod, {"SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{nobody.port}"})
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "helm test failed: the release runs no worker process (worker.replicas=0), so there "
        "is nothing to test. Scale the workers up (helm upgrade --reuse-values --set "
        "worker.replicas=1) and run helm test again.")


def test_helm_test_says_when_the_scheduler_is_unreachable():
    pod = render("helm3").one("Pod")["spec"]["containers"][0]
    with HeldPort() as nobody:  # held, never listening: nothing answers there
        address = f"tcp://127.0.0.1:{nobody.port}"
        out = _helm_test(pod, {"SCHEDULER_ADDRESS": address, "TEST_TIMEOUT": "2"})
    assert out.returncode == 1
    assert f"helm test failed: cannot connect to the scheduler {address} within 2s" in out.stderr
    assert ("Check the scheduler pod (kubectl get pods -n sims -l app.kubernetes.io/instance=mo,"
            "app.kubernetes.io/component=scheduler). If it is only slow to start, raise "
            "tests.timeoutSeconds (now 2)") in out.stderr
