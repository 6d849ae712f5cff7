"""Each preset renders exactly the worker a user expects, and switching presets with
`helm upgrade` rolls the workers without touching immutable fields."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import yaml

import chartkit
from chartkit import PRESETS, render

SCHEDULER = "tcp://mo-modelops-dask-scheduler:8786"

# (processes, threads, executor, forceFreshVenv, maxProcessReuse, pod memory, cpu)
MODES = {
    "debug-isolated": ("1", "1", "direct", "false", "1000", "1536Mi", "1"),
    "debug-parallel": ("4", "1", "direct", "false", "1000", "4608Mi", "4"),
    "prod-warm": ("4", "1", "isolated_warm", "false", "1000", "12800Mi", "4"),
    "diagnose-fresh-venv": ("4", "1", "isolated_warm", "true", "1000", "12800Mi", "4"),
    "fresh-process": ("4", "1", "isolated_warm", "false", "1", "12800Mi", "4"),
}
MODE_KEYS = {"worker.processes", "worker.threads", "worker.executor.type",
             "worker.executor.forceFreshVenv", "worker.executor.maxProcessReuse"}


def expected_args(processes: str, threads: str) -> list[str]:
    return ["worker", SCHEDULER, "--nworkers", processes, "--nthreads", threads,
            "--memory-limit", "1Gi", "--resources", "aggregation=1",
            "--preload", "modelops_runtime.preload", "--preload-nanny", "modelops_runtime.preload",
            "--dashboard-address", ":8788"]


NATIVE_THREAD_VARS = ["BLIS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                      "NUMEXPR_MAX_THREADS", "NUMEXPR_NUM_THREADS", "OMP_NUM_THREADS",
                      "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"]


def test_the_chart_renders_every_thread_variable_the_runtime_sets():
    from modelops_runtime.worker.native import THREAD_VARS
    assert sorted(THREAD_VARS) == NATIVE_THREAD_VARS


def expected_env(executor: str, fresh: str, reuse: str) -> list[dict]:
    env = {
        "MODELOPS_ALLOW_SDIST_BUILDS": "false",
        **dict.fromkeys(NATIVE_THREAD_VARS[:2], "1"),
        "MODELOPS_BUNDLES_MAX_BYTES": "1536Mi",
        "MODELOPS_BUNDLE_CACHE_DIR": "/var/cache/modelops/bundles",
        "MODELOPS_BUNDLE_REPO": chartkit.MY_REPO,
        "MODELOPS_EXECUTOR_TYPE": executor,
        "MODELOPS_FORCE_FRESH_VENV": fresh,
        "MODELOPS_FRESH_PROCESS_FROM": "template",
        "MODELOPS_FRESH_VENVS_AHEAD": "2",
        "MODELOPS_LOG_LEVEL": "INFO",
        "MODELOPS_MAX_PROCESS_REUSE": reuse,
        "MODELOPS_MAX_TASK_PROCESSES": "256",
        "MODELOPS_MAX_WARM_PROCESSES": "8",
        "MODELOPS_NATIVE_THREADS": "1",
        "MODELOPS_POOL_MEMORY_BYTES": "2Gi",
        "MODELOPS_PROCESS_TTL": "3600",
        "MODELOPS_UV_CACHE_MAX_BYTES": "2Gi",
        "MODELOPS_VALIDATE_DEPS": "true",
        "MODELOPS_VENVS_DIR": "/var/cache/modelops/envs/venvs",
        "MODELOPS_VENVS_MAX_BYTES": "6Gi",
        **dict.fromkeys(NATIVE_THREAD_VARS[2:], "1"),
        "UV_CACHE_DIR": "/var/cache/modelops/envs/uv",
    }
    return [{"name": k, "value": v} for k, v in sorted(env.items())]  # helm ranges sorted


def test_every_preset_has_an_expected_mode():
    assert PRESETS == sorted(MODES), "a preset was added or removed: update MODES"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_renders_exactly_the_expected_worker(helm, preset):
    processes, threads, executor, fresh, reuse, memory, cpu = MODES[preset]
    out = render(helm, preset)
    worker = out.container("worker")
    assert worker["command"] == ["dask"]
    assert worker["args"] == expected_args(processes, threads)
    assert worker["env"] == expected_env(executor, fresh, reuse)
    assert "envFrom" not in worker
    assert worker["resources"] == {"requests": {"cpu": cpu, "memory": memory},
                                   "limits": {"cpu": cpu, "memory": memory}}
    assert worker["ports"] == [{"name": "dashboard", "containerPort": 8788, "protocol": "TCP"}]
    scheduler = out.container("scheduler")
    assert scheduler["command"] == ["dask"]
    assert scheduler["args"] == ["scheduler", "--port", "8786", "--dashboard-address", ":8787"]


def test_defaults_are_the_prod_warm_mode(helm):
    assert render(helm).objects == render(helm, "prod-warm").objects


@pytest.mark.parametrize("preset", PRESETS)
def test_render_contract_for_the_local_mode(helm, preset):
    """What `modelops-runtime local` reads from the rendered chart."""
    out = render(helm, preset, sets=("worker.replicas=3",))
    workers = out.one("Deployment", "worker")
    assert workers["spec"]["replicas"] == 3
    assert out.one("Deployment", "scheduler")["spec"]["replicas"] == 1
    args = out.container("worker")["args"]
    assert args[:2] == ["worker", SCHEDULER]
    for item in out.container("worker")["env"]:
        assert set(item) == {"name", "value"} and isinstance(item["value"], str), item


def test_typed_values_reach_args_and_env(helm):
    values = """
worker:
  memoryPerProcess: 3Gi
  daskResources: {aggregation: 2, gpu: 1}
  extraArgs: ["--death-timeout", "60"]
  logLevel: DEBUG
  executor:
    maxWarmProcesses: 3
    validateDeps: false
    processTTL: 120
    maxTaskProcesses: 64
    freshProcessFrom: exec
    freshVenvsAhead: 0
    nativeThreads: 3
    memLimitPerProcess: 512Mi
    poolMemoryPerProcess: 1536Mi
    taskTimeout: 900
    envPassthrough: [OMP_NUM_THREADS, MY_TOKEN]
    writablePaths: [/data/out, /home/model]
    allowSdistBuilds: true
  extraEnv:
    - {name: MY_TOKEN, value: "1"}
  extraEnvFrom:
    - secretRef: {name: bundle-credentials}
bundles:
  repo: s3://models/bundles
"""
    worker = render(helm, values=values).container("worker")
    assert worker["args"] == [
        "worker", SCHEDULER, "--nworkers", "4", "--nthreads", "1", "--memory-limit", "3Gi",
        "--resources", "aggregation=2 gpu=1", "--preload", "modelops_runtime.preload",
        "--preload-nanny", "modelops_runtime.preload", "--dashboard-address", ":8788", "--death-timeout", "60"]
    assert worker["env"] == [{"name": k, "value": v} for k, v in sorted([
        ("MODELOPS_ALLOW_SDIST_BUILDS", "true"),
        *[(k, "3") for k in NATIVE_THREAD_VARS[:2]],
        ("MODELOPS_BUNDLES_MAX_BYTES", "1536Mi"),
        ("MODELOPS_BUNDLE_CACHE_DIR", "/var/cache/modelops/bundles"),
        ("MODELOPS_BUNDLE_REPO", "s3://models/bundles"),
        ("MODELOPS_ENV_PASSTHROUGH", "OMP_NUM_THREADS,MY_TOKEN"),
        ("MODELOPS_EXECUTOR_TYPE", "isolated_warm"),
        ("MODELOPS_FORCE_FRESH_VENV", "false"),
        ("MODELOPS_FRESH_PROCESS_FROM", "exec"),
        ("MODELOPS_FRESH_VENVS_AHEAD", "0"),
        ("MODELOPS_LOG_LEVEL", "DEBUG"),
        ("MODELOPS_MAX_PROCESS_REUSE", "1000"),
        ("MODELOPS_MAX_TASK_PROCESSES", "64"),
        ("MODELOPS_MAX_WARM_PROCESSES", "3"),
        ("MODELOPS_MEM_LIMIT_BYTES", "512Mi"),
        ("MODELOPS_NATIVE_THREADS", "3"),
        ("MODELOPS_POOL_MEMORY_BYTES", "1536Mi"),
        ("MODELOPS_PROCESS_TTL", "120"),
        ("MODELOPS_TASK_TIMEOUT", "900"),
        ("MODELOPS_UV_CACHE_MAX_BYTES", "2Gi"),
        ("MODELOPS_VALIDATE_DEPS", "false"),
        ("MODELOPS_VENVS_DIR", "/var/cache/modelops/envs/venvs"),
        ("MODELOPS_VENVS_MAX_BYTES", "6Gi"),
        ("MODELOPS_WARM_WRITABLE_PATHS", "/data/out,/home/model"),
        *[(k, "3") for k in NATIVE_THREAD_VARS[2:]],
        ("UV_CACHE_DIR", "/var/cache/modelops/envs/uv"),
    ]) + [("MY_TOKEN", "1")]]   # the chart's env sorted, then worker.extraEnv
    assert worker["envFrom"] == [{"secretRef": {"name": "bundle-credentials"}}]
    # 4 × (3072Mi + 1536Mi) + 512Mi
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "18944Mi"}


@pytest.mark.parametrize("given, rendered", [("{/tmp}", "/tmp"),
                                             ("{/tmp,/data/out}", "/tmp,/data/out")])
def test_writable_paths_given_with_set_render_as_the_list(helm, given, rendered):
    """`--set worker.executor.writablePaths={/tmp}` (what the refused-write message
    advises) renders the list into MODELOPS_WARM_WRITABLE_PATHS, paths as given."""
    worker = render(helm, "prod-warm", sets=(f"worker.executor.writablePaths={given}",))
    env = {e["name"]: e.get("value") for e in worker.container("worker")["env"]}
    assert env["MODELOPS_WARM_WRITABLE_PATHS"] == rendered


def test_bundle_credentials_render_into_the_worker_only(helm):
    """bundles.credentials: the Secret as the first envFrom source (before
    worker.extraEnvFrom), the endpoint and region as AWS_* variables, the Secret's name as
    MODELOPS_BUNDLE_CREDENTIALS (for messages); the scheduler gets none of it."""
    out = render(helm, values="""
bundles:
  repo: s3://bundles/team-a
  credentials: {secretName: s3-team-a, endpoint: "http://seaweedfs-s3.storage.svc:8333", region: us-east-1}
worker:
  extraEnvFrom: [{configMapRef: {name: ca-settings}}]
""")
    worker, scheduler = out.container("worker"), out.container("scheduler")
    assert worker["envFrom"] == [{"secretRef": {"name": "s3-team-a"}},
                                 {"configMapRef": {"name": "ca-settings"}}]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["MODELOPS_BUNDLE_CREDENTIALS"] == "Secret s3-team-a"
    assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs-s3.storage.svc:8333"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "envFrom" not in scheduler
    assert not [e for e in scheduler.get("env", []) if e["name"].startswith(("AWS_", "MODELOPS_BUNDLE"))]
    plain = {e["name"] for e in render(helm, values="bundles: {repo: s3://b/x}").container("worker")["env"]}
    assert not {"MODELOPS_BUNDLE_CREDENTIALS", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} & plain


def test_big_numbers_render_as_integers(helm):
    env = {e["name"]: e["value"] for e in render(
        helm, sets=("worker.executor.maxProcessReuse=10000000",
                    "worker.executor.processTTL=86400000")).container("worker")["env"]}
    assert env["MODELOPS_MAX_PROCESS_REUSE"] == "10000000"
    assert env["MODELOPS_PROCESS_TTL"] == "86400000"


def test_explicit_resources_at_least_the_derived_memory_are_kept(helm):
    values = """
worker:
  resources:
    requests: {cpu: 500m}
    limits: {memory: 16Gi, ephemeral-storage: 20Gi}
"""
    resources = render(helm, values=values).container("worker")["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "12800Mi"},
                         "limits": {"cpu": "500m", "memory": "16Gi",
                                    "ephemeral-storage": "20Gi"}}


def test_an_explicit_cpu_limit_caps_the_derived_cpu_request(helm):
    resources = render(helm, values="worker: {resources: {limits: {cpu: 2}}}"
                       ).container("worker")["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == 2


def test_an_explicit_memory_request_raises_the_derived_limit(helm):
    resources = render(helm, values="worker: {resources: {requests: {memory: 14Gi}}}"
                       ).container("worker")["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "14Gi"


# ---- switching presets ------------------------------------------------------------------

def _selectors(out: chartkit.Render) -> dict:
    sel = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["selector"]
           for o in out.objects if o["kind"] in ("Deployment", "Service")}
    return json.loads(json.dumps(sel, sort_keys=True))


def test_selectors_and_names_are_identical_across_presets(helm):
    base = _selectors(render(helm))
    for preset in PRESETS:
        assert _selectors(render(helm, preset)) == base, preset
    assert set(base) == {"Deployment/mo-modelops-dask-scheduler",
                         "Deployment/mo-modelops-dask-worker",
                         "Service/mo-modelops-dask-scheduler"}


def test_selector_labels_never_carry_the_mode(helm):
    for preset in PRESETS:
        for kind, selector in _selectors(render(helm, preset)).items():
            labels = selector.get("matchLabels", selector)
            assert set(labels) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                                   "app.kubernetes.io/component"}, (kind, labels)


@pytest.mark.parametrize("a,b", list(itertools.combinations(PRESETS, 2)))
def test_pod_template_differs_whenever_the_mode_does(helm, a, b):
    """A different pod template is what makes `helm upgrade` roll the workers."""
    ta = render(helm, a).one("Deployment", "worker")["spec"]["template"]
    tb = render(helm, b).one("Deployment", "worker")["spec"]["template"]
    assert ta != tb


def test_a_non_mode_value_keeps_the_pod_template(helm):
    """Scaling (replicas) must not restart running workers."""
    t1 = render(helm).one("Deployment", "worker")["spec"]["template"]
    t2 = render(helm, sets=("worker.replicas=5",)).one("Deployment", "worker")["spec"]["template"]
    assert t1 == t2


# ---- the preset files themselves -----------------------------------------------------

def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip(".")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_an_overlay_of_all_mode_keys_only(preset):
    """Same keys in every preset (the mode's name and the five mode keys): whichever preset
    comes last wins completely, and `mode: <preset>` fills exactly these keys."""
    text = (chartkit.PRESETS_DIR / f"{preset}.yaml").read_text()
    assert set(_leaves(yaml.safe_load(text))) == MODE_KEYS | {"mode"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_header_says_what_it_isolates_and_its_trade_offs(preset):
    text = (chartkit.PRESETS_DIR / f"{preset}.yaml").read_text()
    header = "\n".join(re.findall(r"^# ?(.*)$", text.split("\nmode:")[0], re.M))
    assert header.startswith(f"{preset}:")
    assert "Isolates:" in header and "Trade-offs:" in header


@pytest.mark.parametrize("preset", PRESETS)
def test_ct_lints_every_preset_through_a_symlink(preset):
    """ct lints chart/ci/*-values.yaml: links to chart/presets/, never copies (the whole
    one-source rule: test_chart_mode.py::test_presets_have_one_source)."""
    link = chartkit.CHART / "ci" / f"{preset}-values.yaml"
    assert link.is_symlink(), f"{link} must be a symlink to ../presets/{preset}.yaml"
    assert link.resolve() == (chartkit.CHART / "presets" / f"{preset}.yaml").resolve()
