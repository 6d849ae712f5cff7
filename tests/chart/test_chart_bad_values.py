"""Bad values are refused with a message that names the value, and nothing is rendered."""

from __future__ import annotations

import pytest

from chartkit import render

SCHEMA = "values don't meet the specifications of the schema"

# id → (values YAML, extra helm args, expected message fragments)
CASES = {
    "executor type warm": (
        "worker: {executor: {type: warm}}", (),
        [SCHEMA, "at '/worker/executor/type': value must be one of 'isolated_warm', 'direct'"]),
    "processes 0": (
        "worker: {processes: 0}", (),
        [SCHEMA, "at '/worker/processes': minimum: got 0, want 1"]),
    "threads two": (
        "worker: {threads: two}", (),
        [SCHEMA, "at '/worker/threads': got string, want integer"]),
    "memory lots": (
        "worker: {memoryPerProcess: lots}", (),
        [SCHEMA, "at '/worker/memoryPerProcess': 'lots' does not match pattern"]),
    "fractional memory": (
        "worker: {executor: {poolMemoryPerProcess: 1.5Gi}}", (),
        [SCHEMA, "at '/worker/executor/poolMemoryPerProcess': '1.5Gi' does not match pattern"]),
    "unknown key worker.proceses": (
        "worker: {proceses: 4}", (),
        [SCHEMA, "at '/worker': additional properties 'proceses' not allowed"]),
    "unknown top-level key": (
        "workers: {processes: 4}", (),
        [SCHEMA, "additional properties 'workers' not allowed"]),
    "negative TTL": (
        "worker: {executor: {processTTL: -5}}", (),
        [SCHEMA, "at '/worker/executor/processTTL': minimum: got -5, want 1"]),
    "zero task timeout": (
        "worker: {executor: {taskTimeout: 0}}", (),
        [SCHEMA, "/worker/executor/taskTimeout"]),
    "pull policy": (
        "image: {pullPolicy: Sometimes}", (),
        [SCHEMA, "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"]),
    "service type": (
        "scheduler: {service: {type: Ingress}}", (),
        [SCHEMA, "at '/scheduler/service/type': value must be one of 'ClusterIP', 'NodePort', "
                 "'LoadBalancer'"]),
    "aggregation resource removed": (
        "worker: {daskResources: {aggregation: null}}", (),
        [SCHEMA, "at '/worker/daskResources': missing property 'aggregation'"]),
    "bad passthrough name": (
        "worker: {executor: {envPassthrough: ['MY TOKEN']}}", (),
        [SCHEMA, "at '/worker/executor/envPassthrough/0': 'MY TOKEN' does not match pattern"]),
    "log level": (
        "worker: {logLevel: verbose}", (),
        [SCHEMA, "at '/worker/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"]),
    "undersized explicit memory limit": (
        "worker: {resources: {limits: {memory: 4Gi}}}", (),
        ["worker.resources.limits.memory=4Gi is smaller than the worker mode needs: "
         "4 processes × (1024Mi memoryPerProcess + 2048Mi poolMemoryPerProcess) + "
         "512Mi memoryOverhead = 12800Mi. Raise it to at least 12800Mi"]),
    "undersized explicit memory request (direct)": (
        "worker: {executor: {type: direct}, resources: {requests: {memory: 2Gi}}}", (),
        ["worker.resources.requests.memory=2Gi is smaller than the worker mode needs: "
         "4 processes × (1024Mi memoryPerProcess + 0Mi warm pool (direct)) + "
         "512Mi memoryOverhead = 4608Mi"]),
    "extraEnv sets an owned MODELOPS variable": (
        "worker: {extraEnv: [{name: MODELOPS_EXECUTOR_TYPE, value: direct}]}", (),
        ["worker.extraEnv sets MODELOPS_EXECUTOR_TYPE, which the chart renders from "
         "worker.executor.type. Remove it from worker.extraEnv and set worker.executor.type"]),
    "extraEnv sets an unset optional MODELOPS variable": (
        "worker: {extraEnv: [{name: MODELOPS_TASK_TIMEOUT, value: '5'}]}", (),
        ["worker.extraEnv sets MODELOPS_TASK_TIMEOUT, which the chart renders from "
         "worker.executor.taskTimeout"]),
    "extraEnv moves the uv cache": (
        "worker: {extraEnv: [{name: UV_CACHE_DIR, value: /tmp/uv}]}", (),
        ["worker.extraEnv sets UV_CACHE_DIR, which the chart fixes because uv's cache must be "
         "on the venv-cache volume so that venvs can hard-link from it"]),
    "extraArgs repeats --nthreads": (
        "worker: {extraArgs: ['--nthreads', '8']}", (),
        ["worker.extraArgs contains --nthreads, which the chart renders from worker.threads"]),
    "extraArgs repeats --memory-limit=": (
        "worker: {extraArgs: ['--memory-limit=8GB']}", (),
        ["worker.extraArgs contains --memory-limit, which the chart renders from "
         "worker.memoryPerProcess"]),
    "extraArgs turns the dashboard off": (
        "worker: {extraArgs: ['--no-dashboard']}", (),
        ["worker.extraArgs contains --no-dashboard, which the chart does not allow: the "
         "dashboard serves the probes' /health and the scraped /metrics"]),
    "fresh venv with the direct executor": (
        "worker: {executor: {type: direct, forceFreshVenv: true}}", (),
        ["worker.executor.forceFreshVenv=true needs worker.executor.type=isolated_warm"]),
    "warm process limit above the pool budget": (
        "worker: {executor: {memLimitPerProcess: 4Gi, poolMemoryPerProcess: 2Gi}}", (),
        ["worker.executor.memLimitPerProcess=4Gi (4096Mi) is larger than "
         "worker.executor.poolMemoryPerProcess=2Gi (2048Mi)"]),
    "bundle volume with a URL repository": (
        "bundles: {repo: 's3://b/bundles', volume: {persistentVolumeClaim: {claimName: x}}}", (),
        ['bundles.volume is set but bundles.repo="s3://b/bundles" is a URL, not an absolute '
         "path: the volume is mounted at bundles.repo"]),
    "bundle repository emptied": (
        "bundles: {repo: ''}", (),
        ["bundles.repo is not set: the workers need a bundle repository and the chart has no "
         "default", "bundles.repo: s3://bucket/prefix", "worker.extraEnvFrom",
         "bundles.volume: {persistentVolumeClaim: {claimName: <your claim>}}"]),
    "bundle repository path without a volume": (
        "bundles: {repo: /var/lib/modelops/bundle-repo}", (),
        ['bundles.repo="/var/lib/modelops/bundle-repo" is a path in the worker pods but '
         "bundles.volume is empty: nothing would put bundles there",
         "every task would fail with BundleNotFound",
         "Mount your repository there with bundles.volume",
         "or use an fsspec URL instead (s3://bucket/prefix; "
         "file:///var/lib/modelops/bundle-repo if your own image contains the repository)"]),
    "bundle repository relative path": (
        "bundles: {repo: bundles/repo}", (),
        ['bundles.repo="bundles/repo" is neither an absolute path nor a URL']),
    "bundle volume that starts empty": (
        "bundles: {repo: /var/lib/modelops/bundle-repo, volume: {emptyDir: {}}}", (),
        ["bundles.volume is an emptyDir: it starts empty and is mounted read-only, so it never "
         "holds a bundle"]),
    "memory request above the memory limit": (
        "worker: {resources: {requests: {memory: 20Gi}, limits: {memory: 16Gi}}}", (),
        ["worker.resources.requests.memory=20Gi is larger than "
         "worker.resources.limits.memory=16Gi: Kubernetes refuses a request above its limit"]),
    "cpu request above the cpu limit (millicores)": (
        "worker: {resources: {requests: {cpu: 1500m}, limits: {cpu: 1.2}}}", (),
        ["worker.resources.requests.cpu=1500m is larger than worker.resources.limits.cpu=1.2: "
         "Kubernetes refuses a request above its limit"]),
    "kubernetes older than supported": (
        "", ("--kube-version", "1.28.0"),
        ["chart requires kubeVersion: >=1.29.0-0 which is incompatible with Kubernetes v1.28.0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_are_refused_with_a_clear_message(helm, case):
    values, extra, fragments = CASES[case]
    out = render(helm, values=values or None, extra=extra)
    assert out.returncode != 0, f"{case}: helm accepted it:\n{out.stdout[:2000]}"
    assert "kind:" not in out.stdout, f"{case}: objects were rendered before the refusal"
    for fragment in fragments:
        assert fragment in out.stderr, f"{case}: {fragment!r} not in:\n{out.stderr}"


def test_at_least_twelve_cases():
    assert len(CASES) >= 12


@pytest.mark.parametrize("preset", [None, "prod-warm", "debug-isolated"])
def test_an_install_without_a_bundle_repository_is_refused(helm, preset):
    """`helm install` with the chart's defaults (and a preset, which sets only mode keys)
    refuses at once instead of starting workers whose every task fails."""
    out = render(helm, *([preset] if preset else []), mine=False)
    assert out.returncode != 0 and "kind:" not in out.stdout
    assert "bundles.repo is not set" in out.stderr
    assert "Set it in your values file to either an fsspec URL" in out.stderr


@pytest.mark.parametrize("values", [
    "bundles: {repo: 'file:///opt/bundle-repo'}",
    "bundles: {repo: /mnt/repo, volume: {persistentVolumeClaim: {claimName: bundles}}}",
    "worker: {resources: {requests: {memory: 16Gi, cpu: 500m}, limits: {memory: 16Gi, cpu: 0.5}}}",
])
def test_the_nearest_good_values_render(helm, values):
    """The boundary of each refusal: a repository built into the image (file://), a path
    with a volume, requests equal to their limits."""
    assert render(helm, values=values).returncode == 0
