"""worker.autoscaling: the KEDA ScaledObject, the worker Deployment without replicas, the
scheduler's route list, the NetworkPolicy rule and the refusals (each one line),
rendered by the real helm 3 and 4; the rendered route list published by a real
`dask scheduler`. NOTES need a cluster serving KEDA's CRD (`helm install --dry-run` takes
no --api-versions): tests/cluster/apiserver/test_autoscaling.py reads them."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from chartkit import render
from support.cluster import wait_for

KEDA = ("--api-versions", "keda.sh/v1alpha1/ScaledObject")
ON = ("worker.autoscaling.enabled=true",)
ROUTES_VAR = "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"
MISSING_DEFAULT = ("If the release was upgraded from an older chart version with --reuse-values, "
                   "helm kept the old chart's defaults, which lack this value: upgrade with "
                   "--reset-then-reuse-values instead.")
DIAGNOSIS = ("worker.autoscaling.enabled=true with the {mode} mode: the diagnosis modes "
             "(debug-isolated, debug-parallel, diagnose-fresh-venv) are compared run against "
             "run on a fixed layout of pods and processes, and a pod count that follows the "
             "backlog changes that layout during a run. Fix the count with worker.replicas "
             "and worker.autoscaling.enabled=false, or autoscale prod-warm or fresh-process.")


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or []}


def _dask_default_routes() -> list[str]:
    """Dask's own default scheduler routes, from the installed distributed's config file
    (not dask.config: an environment variable could change that)."""
    import distributed

    config = yaml.safe_load((Path(distributed.__file__).parent / "distributed.yaml").read_text())
    return config["distributed"]["scheduler"]["http"]["routes"]


@pytest.mark.parametrize("preset", ["prod-warm", "fresh-process"])
def test_one_scaled_object_follows_the_adaptive_target_per_pod(helm, preset):
    out = render(helm, preset, sets=ON, extra=KEDA)
    so = out.one("ScaledObject", "worker")
    worker = out.one("Deployment", "worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["metadata"]["name"] == worker["metadata"]["name"] == "mo-modelops-dask-worker"
    labels = so["metadata"]["labels"]
    assert {k: labels[k] for k in labels if k.startswith("app.kubernetes.io/")} == {
        "app.kubernetes.io/name": "modelops-dask", "app.kubernetes.io/instance": "mo",
        "app.kubernetes.io/component": "worker", "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "modelops-dask"}
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "mo-modelops-dask-worker"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 10)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (15, 300)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"] == {
        "name": "mo-modelops-dask-worker",
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                     "scaleDown": {"stabilizationWindowSeconds": 300}}}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    # pods = ceil(workers the scheduler wants / Dask worker processes per pod)
    nworkers = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    processes = nworkers[nworkers.index("--nworkers") + 1]
    assert trigger["metadata"] == {
        "url": "http://mo-modelops-dask-scheduler.sims.svc:8787/api/v1/adaptive_target",
        "format": "json", "valueLocation": "workers", "targetValue": processes,
        "activationTargetValue": "0"}
    assert processes == "4"
    # KEDA's CRD keeps trigger metadata as strings
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    # the count is the autoscaler's: helm must not send one
    assert "replicas" not in worker["spec"]


def test_every_value_reaches_the_scaled_object(helm):
    values = """
worker:
  processes: 2
  autoscaling: {enabled: true, minReplicas: 0, maxReplicas: 7, pollingInterval: 5,
                cooldownPeriod: 60, scaleUpStabilizationSeconds: 30,
                scaleDownStabilizationSeconds: 600,
                schedulerURL: "http://127.0.0.1:38787"}
"""
    spec = render(helm, values=values, extra=KEDA).one("ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 7)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (5, 60)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleUp": {"stabilizationWindowSeconds": 30},
                        "scaleDown": {"stabilizationWindowSeconds": 600}}
    meta = spec["triggers"][0]["metadata"]
    assert meta["url"] == "http://127.0.0.1:38787/api/v1/adaptive_target"
    assert meta["targetValue"] == "2"


def test_without_autoscaling_nothing_changes(helm):
    out = render(helm)
    assert not [o for o in out.objects if o["kind"] == "ScaledObject"]
    assert out.one("Deployment", "worker")["spec"]["replicas"] == 1  # replicas null → 1
    assert ROUTES_VAR not in _env(out.container("scheduler"))
    assert render(helm, sets=("worker.replicas=3",)).one(
        "Deployment", "worker")["spec"]["replicas"] == 3


def test_the_scheduler_publishes_dasks_routes_plus_the_api_only_with_autoscaling(helm):
    """Dask's defaults stay (dashboard, /health, /metrics); the api module is added. The
    chart's list must equal the installed Dask's defaults: a route Dask adds later would
    otherwise silently disappear with autoscaling."""
    out = render(helm, sets=ON, extra=KEDA)
    env = _env(out.container("scheduler"))
    import ast

    routes = ast.literal_eval(env[ROUTES_VAR])
    assert routes == [*_dask_default_routes(), "distributed.http.scheduler.api"]
    # scheduler.extraEnv still comes after it
    extra = render(helm, sets=(*ON, "scheduler.extraEnv[0].name=A", "scheduler.extraEnv[0].value=b"),
                   extra=KEDA).container("scheduler")["env"]
    assert [e["name"] for e in extra] == [ROUTES_VAR, "A"]


def test_the_network_policy_lets_keda_read_the_target(helm):
    out = render(helm, sets=(*ON, "networkPolicy.enabled=true"), extra=KEDA)
    (policy,) = [o for o in out.objects if o["kind"] == "NetworkPolicy"
                 and o["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler"]
    keda = [r for r in policy["spec"]["ingress"] if r.get("ports") == [{"port": 8787, "protocol": "TCP"}]]
    assert keda == [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "keda"}}}], "ports": [{"port": 8787, "protocol": "TCP"}]}]
    off = render(helm, sets=("networkPolicy.enabled=true",))
    assert "keda" not in off.stdout
    # an empty list is the user's choice (clientFrom admits KEDA); without a NetworkPolicy,
    # or without autoscaling, the missing key matters to nothing
    empty = render(helm, values="networkPolicy: {enabled: true, autoscalerFrom: [], clientFrom: "
                   "[{podSelector: {matchLabels: {keda: 'yes'}}}]}", sets=ON, extra=KEDA)
    assert empty.returncode == 0 and "kubernetes.io/metadata.name: keda" not in empty.stdout
    for sets in ((*ON,), ("networkPolicy.enabled=true",)):
        out = render(helm, sets=(*sets, "networkPolicy.autoscalerFrom=null"), extra=KEDA)
        assert out.returncode == 0, out.stderr


def test_the_helm_test_expects_the_pods_the_autoscaler_keeps(helm):
    def env(*sets):
        pod = render(helm, sets=sets, extra=KEDA).one("Pod")["spec"]["containers"][0]
        return _env(pod)
    assert env(*ON)["EXPECTED_PROCESSES"] == "4" and env(*ON)["AUTOSCALED"] == "true"
    assert env(*ON, "worker.autoscaling.minReplicas=3")["EXPECTED_PROCESSES"] == "12"
    # from 0 pods: one pod, which the script's first task asks for
    assert env(*ON, "worker.autoscaling.minReplicas=0")["EXPECTED_PROCESSES"] == "4"
    assert "AUTOSCALED" not in env()


def _refusal(out) -> str:
    """The chart's one-line message (helm prints `Error: execution error at (...): <it>`)."""
    assert out.returncode != 0, out.stdout[:500]
    match = re.search(r"execution error at \([^)]*\): (.*)", out.stderr)
    assert match, out.stderr
    return match.group(1)


REFUSALS = {
    "replicas too": (
        (*ON, "worker.replicas=2"), KEDA,
        "worker.replicas=2 is set together with worker.autoscaling.enabled=true: with "
        "autoscaling the worker pod count is KEDA's (between worker.autoscaling.minReplicas "
        "and maxReplicas) and a fixed count would undo its work on every helm upgrade. "
        "Remove worker.replicas (--set worker.replicas=null), or set "
        "worker.autoscaling.enabled=false."),
    "max below min": (
        (*ON, "worker.autoscaling.minReplicas=4", "worker.autoscaling.maxReplicas=3"), KEDA,
        "worker.autoscaling.maxReplicas=3 is below worker.autoscaling.minReplicas=4: the "
        "range of worker pods is empty. Set maxReplicas to at least minReplicas."),
    "debug-isolated": ((*ON, "mode=debug-isolated"), KEDA, DIAGNOSIS.format(mode="debug-isolated")),
    "debug-parallel": ((*ON, "mode=debug-parallel"), KEDA, DIAGNOSIS.format(mode="debug-parallel")),
    "diagnose-fresh-venv": ((*ON, "mode=diagnose-fresh-venv"), KEDA,
                            DIAGNOSIS.format(mode="diagnose-fresh-venv")),
    # prod-warm with the debug preset's keys set by hand is the same diagnosis mode
    "debug keys by hand": (
        (*ON, "worker.processes=1", "worker.threads=1", "worker.executor.type=direct"), KEDA,
        DIAGNOSIS.format(mode="debug-isolated")),
    "no KEDA": (
        ON, (),
        "worker.autoscaling.enabled=true needs KEDA (the ScaledObject CRD, keda.sh/v1alpha1), "
        "which this cluster does not serve. Install KEDA first (its Helm chart kedacore/keda, "
        "or its release manifests), or set worker.autoscaling.enabled=false. (helm template "
        "knows no cluster: pass --api-versions keda.sh/v1alpha1/ScaledObject.)"),
    "routes by hand": (
        (*ON, f"scheduler.extraEnv[0].name={ROUTES_VAR}", "scheduler.extraEnv[0].value=[]"), KEDA,
        f"scheduler.extraEnv sets {ROUTES_VAR}, which the chart renders with "
        "worker.autoscaling.enabled=true (Dask's default routes plus "
        "distributed.http.scheduler.api, where KEDA reads /api/v1/adaptive_target). Remove it "
        "from scheduler.extraEnv."),
    "no dashboard": (
        (*ON, "scheduler.extraArgs[0]=--no-dashboard"), KEDA,
        "scheduler.extraArgs contains --no-dashboard, but worker.autoscaling.enabled=true reads "
        "the scheduler's adaptive target on its dashboard port (8787). Remove --no-dashboard, "
        "or set worker.autoscaling.enabled=false."),
    "old defaults kept by --reuse-values": (
        (*ON, "worker.autoscaling.minReplicas=null", "worker.autoscaling.maxReplicas=null"), KEDA,
        "worker.autoscaling.enabled=true but worker.autoscaling.minReplicas, "
        "worker.autoscaling.maxReplicas not set: set them (the chart's defaults: minReplicas 1, "
        "maxReplicas 10, pollingInterval 15, cooldownPeriod 300, scaleUpStabilizationSeconds 0, "
        "scaleDownStabilizationSeconds 300). " + MISSING_DEFAULT),
    "autoscalerFrom dropped by --reuse-values": (
        (*ON, "networkPolicy.enabled=true", "networkPolicy.autoscalerFrom=null"), KEDA,
        "networkPolicy.enabled=true and worker.autoscaling.enabled=true but "
        "networkPolicy.autoscalerFrom is not set: the NetworkPolicy would keep KEDA's operator "
        "from the scheduler's adaptive target (port 8787), and the workers would never scale. "
        "Set it (the chart's default: the namespace keda, [{namespaceSelector: {matchLabels: "
        "{kubernetes.io/metadata.name: keda}}}]), or to [] if networkPolicy.clientFrom "
        "already admits KEDA's operator. " + MISSING_DEFAULT),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_say_one_line(helm, case):
    sets, extra, line = REFUSALS[case]
    out = render(helm, sets=sets, extra=extra)
    assert _refusal(out) == line
    assert not out.stdout.strip()


SCHEMA_REFUSALS = {
    "min below zero": ("worker.autoscaling.minReplicas=-1",
                       "at '/worker/autoscaling/minReplicas': minimum: got -1, want 0"),
    "max zero": ("worker.autoscaling.maxReplicas=0",
                 "at '/worker/autoscaling/maxReplicas': minimum: got 0, want 1"),
    "window past the HPA's hour": ("worker.autoscaling.scaleDownStabilizationSeconds=3601",
                                   "at '/worker/autoscaling/scaleDownStabilizationSeconds': "
                                   "maximum: got 3,601, want 3,600"),
    "polling 0": ("worker.autoscaling.pollingInterval=0",
                  "at '/worker/autoscaling/pollingInterval': minimum: got 0, want 1"),
    "URL with a query": ("worker.autoscaling.schedulerURL=http://s:8787/?x=1",
                         "at '/worker/autoscaling/schedulerURL': 'http://s:8787/?x=1' does not "
                         "match pattern"),
    "typo": ("worker.autoscaling.maxReplica=3",
             "at '/worker/autoscaling': additional properties 'maxReplica' not allowed"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REFUSALS))
def test_field_syntax_is_the_schemas(helm, case):
    setting, fragment = SCHEMA_REFUSALS[case]
    out = render(helm, sets=(*ON, setting), extra=KEDA)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert fragment in out.stderr, out.stderr


def test_zero_min_replicas_and_a_custom_mode_render(helm):
    """0 is allowed; a mode of the user's own (no preset's keys) may autoscale."""
    out = render(helm, sets=(*ON, "worker.autoscaling.minReplicas=0", "mode=debug-isolated",
                             "worker.processes=2"), extra=KEDA)
    spec = out.one("ScaledObject")["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["triggers"][0]["metadata"]["targetValue"] == "2"


# -- the rendered route list, published by a real `dask scheduler` --------------------------

def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_a_real_scheduler_serves_the_adaptive_target_with_the_rendered_routes(dask_cluster):
    env = _env(render("helm3", sets=ON, extra=KEDA).container("scheduler"))
    cluster, client = dask_cluster(env={ROUTES_VAR: env[ROUTES_VAR]}, workers=0, wait=False)
    base = f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}"
    url = f"{base}/api/v1/adaptive_target"
    assert _get(url) == (200, json.dumps({"workers": 0}))
    assert _get(f"{base}/health") == (200, "ok")  # Dask's defaults are still served
    # a task and no worker: the scheduler wants one (what scales from minReplicas 0)
    future = client.submit(sum, [1, 2])
    wait_for(lambda: json.loads(_get(url)[1])["workers"] >= 1, 30,
             "the adaptive target to ask for a worker")
    cluster.start_worker(nworkers=2)
    assert future.result(timeout=60) == 3
    assert json.loads(_get(url)[1])["workers"] <= 2

    plain, plain_client = dask_cluster(workers=0, wait=False)  # autoscaling off: no api
    port = plain_client.scheduler_info()["services"]["dashboard"]
    assert _get(f"http://127.0.0.1:{port}/api/v1/adaptive_target")[0] == 404
    assert _get(f"http://127.0.0.1:{port}/api/v1/retire_workers")[0] == 404


def test_the_helm_test_asks_for_a_pod_when_the_autoscaler_keeps_none(dask_cluster, tmp_path):
    """minReplicas 0 and an idle scheduler: no pod runs, so the helm test pod's script first
    queues a task, the scheduler's adaptive target (what KEDA reads) rises to 1, a pod
    starts (here: the rendered worker command, as KEDA's scale-up would start it) and the
    script runs its probe there."""
    import subprocess
    import sys

    out = render("helm3", values="bundles: {repo: 'file:///var/lib/modelops/bundle-repo'}",
                 sets=(*ON, "worker.autoscaling.minReplicas=0", "worker.processes=1"), extra=KEDA)
    scheduler_env = _env(out.container("scheduler"))
    cluster, client = dask_cluster(env={ROUTES_VAR: scheduler_env[ROUTES_VAR]},
                                   workers=0, wait=False)
    url = f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}/api/v1/adaptive_target"
    pod = out.one("Pod")["spec"]["containers"][0]
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**cluster.env, **_env(pod), "SCHEDULER_ADDRESS": cluster.address,
           "TEST_TIMEOUT": "120"}
    assert env["EXPECTED_PROCESSES"] == "1" and env["AUTOSCALED"] == "true"
    # without the demand (the script before autoscaling) nothing asks for a pod: it waits
    # for a worker that never comes
    idle = subprocess.run([sys.executable, "-c", pod["args"][0]], capture_output=True,
                          text=True, timeout=120,
                          env={**{k: v for k, v in env.items() if k != "AUTOSCALED"},
                               "TEST_TIMEOUT": "3"})
    assert idle.returncode == 1
    assert "helm test failed: only 0 of 1 worker processes connected within 3s" in idle.stderr
    assert json.loads(_get(url)[1]) == {"workers": 0}
    script = subprocess.Popen([sys.executable, "-c", pod["args"][0]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: json.loads(_get(url)[1])["workers"] >= 1 or script.poll() is not None,
                 60, "the helm test's demand to raise the adaptive target")
        assert script.poll() is None, script.communicate()
        cluster.start_worker(env={"MODELOPS_BUNDLE_REPO": f"file://{repo}"})
        stdout, stderr = script.communicate(timeout=180)
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
    assert script.returncode == 0, stderr
    assert stdout.strip().startswith("ok: 1 worker processes connected; on each, a task ran "
                                     "with executor isolated_warm"), stdout
