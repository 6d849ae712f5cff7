"""What an operator sees in the cluster: hardened pods, cache volumes, metrics, the optional
objects and the helm test pod."""

from __future__ import annotations

import pytest

from chartkit import API_VERSIONS, PRESETS, render

HARDENED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
HARDENED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}
STANDARD_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/component", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                   "helm.sh/chart"}


def _pod_specs(out):
    for obj in out.objects:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_pod_is_hardened_by_default(helm, preset):
    specs = dict(_pod_specs(render(helm, preset)))
    assert len(specs) == 3  # scheduler, workers, helm test
    for name, spec in specs.items():
        assert spec["securityContext"] == HARDENED_POD, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert container["securityContext"] == HARDENED_CONTAINER, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"


def test_every_object_has_the_standard_labels(helm):
    out = render(helm, sets=("worker.podDisruptionBudget.enabled=true",
                             "networkPolicy.enabled=true", "metrics.podMonitor.enabled=true"),
                 extra=API_VERSIONS)
    for obj in out.objects:
        assert STANDARD_LABELS <= set(obj["metadata"]["labels"]), obj["kind"]


def test_worker_caches_are_on_writable_volumes(helm):
    out = render(helm)
    worker = out.container("worker")
    env = {e["name"]: e["value"] for e in worker["env"]}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "bundle-cache": "/var/cache/modelops/bundles",
                      "venv-cache": "/var/cache/modelops/envs"}
    assert env["MODELOPS_BUNDLE_CACHE_DIR"].startswith(mounts["bundle-cache"])
    # venvs and uv's cache share one volume: uv hard-links from its cache into venvs
    for name in ("MODELOPS_VENVS_DIR", "UV_CACHE_DIR"):
        assert env[name].startswith(mounts["venv-cache"] + "/"), name
    volumes = {v["name"]: v for v in
               out.one("Deployment", "worker")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["venv-cache"] == {"name": "venv-cache", "emptyDir": {"sizeLimit": "10Gi"}}
    assert volumes["bundle-cache"]["emptyDir"] == {"sizeLimit": "2Gi"}


def test_venv_cache_can_be_a_persistent_volume_claim(helm):
    out = render(helm, sets=("worker.cache.venvsExistingClaim=venvs",))
    volumes = {v["name"]: v for v in
               out.one("Deployment", "worker")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["venv-cache"] == {"name": "venv-cache",
                                     "persistentVolumeClaim": {"claimName": "venvs"}}


def test_bundle_repository_volume_is_mounted_read_only_at_the_repo_path(helm):
    out = render(helm, values="bundles: {repo: /mnt/repo, volume: {nfs: {server: nas, path: /b}}}")
    worker = out.container("worker")
    assert {"name": "bundle-repo", "mountPath": "/mnt/repo", "readOnly": True} in \
        worker["volumeMounts"]
    volumes = out.one("Deployment", "worker")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "bundle-repo", "nfs": {"server": "nas", "path": "/b"}} in volumes
    assert {"name": "MODELOPS_BUNDLE_REPO", "value": "/mnt/repo"} in worker["env"]


def test_probes_use_the_dask_health_endpoints(helm):
    out = render(helm)
    for component, port in (("scheduler", "dashboard"), ("worker", "dashboard")):
        container = out.container(component)
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": port}
    assert {p["name"]: p["containerPort"] for p in out.container("scheduler")["ports"]} == {
        "comm": 8786, "dashboard": 8787}
    service = out.one("Service", "scheduler")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("comm", 8786), ("dashboard", 8787)]


# ---- metrics --------------------------------------------------------------------------

def test_worker_pods_carry_prometheus_scrape_annotations(helm):
    template = render(helm).one("Deployment", "worker")["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8788",
        "prometheus.io/path": "/metrics"}
    assert "--dashboard-address" in render(helm).container("worker")["args"]


def test_scrape_annotations_can_be_switched_off_and_user_annotations_kept(helm):
    out = render(helm, values="metrics: {scrapeAnnotations: false}\n"
                              "worker: {podAnnotations: {team: sims}}")
    assert out.one("Deployment", "worker")["spec"]["template"]["metadata"]["annotations"] == {
        "team": "sims"}


def test_no_pod_monitor_by_default(helm):
    assert not [o for o in render(helm).objects if o["kind"] == "PodMonitor"]


def test_pod_monitor_scrapes_the_worker_dashboard_port(helm):
    out = render(helm, values="metrics: {podMonitor: {enabled: true, interval: 15s, "
                              "labels: {release: prometheus}}}", extra=API_VERSIONS)
    monitor = out.one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"] == out.one("Deployment", "worker")["spec"]["selector"]
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "dashboard", "path": "/metrics", "interval": "15s"}]


# ---- optional objects -------------------------------------------------------------------

def test_pdb_and_network_policies_are_off_by_default(helm):
    kinds = {o["kind"] for o in render(helm).objects}
    assert kinds == {"Deployment", "Service", "Pod"}


def test_pdb_selects_the_workers(helm):
    out = render(helm, sets=("worker.podDisruptionBudget.enabled=true",))
    pdb = out.one("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1,
                           "selector": out.one("Deployment", "worker")["spec"]["selector"]}


def test_network_policies_let_the_release_in_and_listed_peers_to_their_ports(helm):
    values = """
networkPolicy:
  enabled: true
  clientFrom: [{namespaceSelector: {matchLabels: {team: modelers}}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]
"""
    out = render(helm, values=values)
    release = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "modelops-dask",
                                               "app.kubernetes.io/instance": "mo"}}}
    by_component = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
                    for p in out.objects if p["kind"] == "NetworkPolicy"}
    assert by_component["scheduler"]["ingress"] == [
        {"from": [release]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "modelers"}}}],
         "ports": [{"port": 8786, "protocol": "TCP"}, {"port": 8787, "protocol": "TCP"}]}]
    assert by_component["worker"]["ingress"] == [
        {"from": [release]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
         "ports": [{"port": 8788, "protocol": "TCP"}]}]
    for component, spec in by_component.items():
        assert spec["podSelector"] == out.one("Deployment", component)["spec"]["selector"]
    # with the scheduler's ServiceMonitor, Prometheus (metricsFrom) may scrape 8787 too
    with_monitor = render(helm, values=values + "metrics: {serviceMonitor: {enabled: true}}",
                          extra=API_VERSIONS)
    (scheduler_policy,) = [p["spec"] for p in with_monitor.objects if p["kind"] == "NetworkPolicy"
                           and p["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler"]
    assert scheduler_policy["ingress"][2] == {
        "from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
        "ports": [{"port": 8787, "protocol": "TCP"}]}
    # the helm test pod carries the release labels, so the policies let it in
    test_labels = out.one("Pod")["metadata"]["labels"]
    assert release["podSelector"]["matchLabels"].items() <= test_labels.items()


# ---- helm test --------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_helm_test_pod_runs_a_task_against_this_release(helm, preset):
    out = render(helm, preset, sets=("worker.replicas=2",))
    pod = out.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["image"] == out.container("worker")["image"]
    assert container["command"] == ["python", "-c"]
    assert "client.submit(probe" in container["args"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    processes = int(out.container("worker")["args"][3])
    executor = {e["name"]: e["value"] for e in out.container("worker")["env"]}[
        "MODELOPS_EXECUTOR_TYPE"]
    assert env == {"SCHEDULER_ADDRESS": "tcp://mo-modelops-dask-scheduler:8786",
                   "EXPECTED_PROCESSES": str(2 * processes),
                   "EXPECTED_EXECUTOR": executor, "TEST_TIMEOUT": "240",
                   "RELEASE_PODS": "-n sims -l app.kubernetes.io/instance=mo"}
    assert pod["spec"]["restartPolicy"] == "Never"


def test_helm_test_ends_with_its_own_message_within_helms_default_timeout(helm):
    """The script's one deadline (tests.timeoutSeconds) comes before the pod's, and the
    pod's before `helm test`'s default --timeout of 5m: a slow rollout ends with the
    script's message, not with DeadlineExceeded or helm's "timed out"."""
    pod = render(helm).one("Pod")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert int(env["TEST_TIMEOUT"]) + 60 == pod["spec"]["activeDeadlineSeconds"] <= 300
    pod = render(helm, sets=("tests.timeoutSeconds=900",)).one("Pod")
    assert pod["spec"]["activeDeadlineSeconds"] == 960


def test_helm_test_script_is_valid_python(helm):
    script = render(helm).one("Pod")["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")


def test_helm_test_pod_can_be_left_out(helm):
    assert not [o for o in render(helm, sets=("tests.enabled=false",)).objects
                if o["kind"] == "Pod"]
