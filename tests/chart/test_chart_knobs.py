"""The knobs a platform engineer reaches for (issue 13): each one reaches the object it
configures, on helm 3 and helm 4. (Validity against the Kubernetes schemas, all of them
switched on at once, is in test_chart_k8s_schema.py's EVERYTHING.)"""

from __future__ import annotations

import pytest

from chartkit import API_VERSIONS, render

DIGEST = "sha256:" + "ab" * 32
WORKER_LABELS = {"app.kubernetes.io/name": "modelops-dask", "app.kubernetes.io/instance": "mo",
                 "app.kubernetes.io/component": "worker"}


def _pod(out, component: str) -> dict:
    return out.one("Deployment", component)["spec"]["template"]["spec"]


# ---- image, identity, scheduling ------------------------------------------------------

def test_image_digest_pins_every_pod_and_ignores_the_tag(helm):
    out = render(helm, values=f"image: {{repository: reg.example/mo, tag: '9', digest: '{DIGEST}'}}")
    images = [c["image"] for o in out.objects if o["kind"] in ("Deployment", "Pod")
              for c in (o["spec"]["template"]["spec"] if o["kind"] == "Deployment"
                        else o["spec"])["containers"]]
    assert images == [f"reg.example/mo@{DIGEST}"] * 3


def test_without_a_digest_the_tag_is_used(helm):
    assert render(helm).container("worker")["image"] == "modelops-dask:0.1.0"


def test_service_account_created_with_annotations_for_the_workers(helm):
    out = render(helm, values="serviceAccount: {create: true, annotations: "
                              "{iam.gke.io/gcp-service-account: b@p.iam.gserviceaccount.com}}")
    account = out.one("ServiceAccount")
    assert account["metadata"]["name"] == "mo-modelops-dask-worker"
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "b@p.iam.gserviceaccount.com"}
    assert account["automountServiceAccountToken"] is False
    workers = _pod(out, "worker")
    assert workers["serviceAccountName"] == "mo-modelops-dask-worker"
    assert workers["automountServiceAccountToken"] is False
    # the scheduler needs no cloud identity
    assert "serviceAccountName" not in _pod(out, "scheduler")


def test_an_existing_service_account_by_name(helm):
    out = render(helm, values="serviceAccount: {name: bundle-reader, automountToken: true}")
    assert not [o for o in out.objects if o["kind"] == "ServiceAccount"]
    assert _pod(out, "worker")["serviceAccountName"] == "bundle-reader"
    assert _pod(out, "worker")["automountServiceAccountToken"] is True


def test_no_service_account_by_default(helm):
    out = render(helm)
    assert not [o for o in out.objects if o["kind"] == "ServiceAccount"]
    assert "serviceAccountName" not in _pod(out, "worker")


def test_worker_strategy_is_recreate_by_default(helm):
    """A mode switch must never have old-mode and new-mode workers at once."""
    assert render(helm).one("Deployment", "worker")["spec"]["strategy"] == {"type": "Recreate"}


def test_worker_strategy_rolling_update(helm):
    values = "worker: {strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}}"
    assert render(helm, values=values).one("Deployment", "worker")["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_priority_class_names(helm):
    out = render(helm, values="worker: {priorityClassName: sims}\n"
                              "scheduler: {priorityClassName: system-cluster-critical}")
    assert _pod(out, "worker")["priorityClassName"] == "sims"
    assert _pod(out, "scheduler")["priorityClassName"] == "system-cluster-critical"
    assert "priorityClassName" not in _pod(render(helm), "worker")


def test_default_topology_spread_spreads_workers_across_nodes(helm):
    assert _pod(render(helm), "worker")["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": WORKER_LABELS}}]


def test_topology_spread_keeps_an_explicit_selector_and_can_be_turned_off(helm):
    values = """
worker:
  topologySpreadConstraints:
    - {maxSkew: 2, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
       labelSelector: {matchLabels: {team: sims}}}
"""
    assert _pod(render(helm, values=values), "worker")["topologySpreadConstraints"] == [{
        "maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"team": "sims"}}}]
    off = render(helm, values="worker: {topologySpreadConstraints: []}")
    assert "topologySpreadConstraints" not in _pod(off, "worker")


# ---- probes, security contexts, env, volumes -----------------------------------------

@pytest.mark.parametrize("component", ["worker", "scheduler"])
def test_probes_take_their_timing_from_values(helm, component):
    values = f"""
{component}:
  readinessProbe: {{periodSeconds: 11, successThreshold: 2}}
  livenessProbe: {{initialDelaySeconds: 120, failureThreshold: 9}}
"""
    container = render(helm, values=values).container(component)
    health = {"path": "/health", "port": "dashboard"}
    assert container["readinessProbe"] == {"httpGet": health, "periodSeconds": 11,
                                           "timeoutSeconds": 3, "successThreshold": 2}
    live = container["livenessProbe"]
    assert live["httpGet"] == health and live["initialDelaySeconds"] == 120
    assert live["failureThreshold"] == 9


@pytest.mark.parametrize("component", ["worker", "scheduler"])
def test_probes_can_be_turned_off(helm, component):
    off = "{enabled: false}"
    values = f"{component}: {{livenessProbe: {off}, readinessProbe: {off}}}"
    container = render(helm, values=values).container(component)
    assert "livenessProbe" not in container and "readinessProbe" not in container


@pytest.mark.parametrize("block", ["scheduler: {ingress: null}", "serviceAccount: null",
                                   "metrics: {serviceMonitor: null}"])
def test_a_new_optional_block_set_to_null_is_off(helm, block):
    kinds = {o["kind"] for o in render(helm, values=block).objects}
    assert kinds == {"Deployment", "Service", "Pod"}


def test_security_contexts_merge_per_component(helm):
    values = """
worker:
  podSecurityContext: {runAsUser: 20000, fsGroupChangePolicy: OnRootMismatch}
  containerSecurityContext: {capabilities: {add: [SYS_PTRACE]}}
scheduler:
  containerSecurityContext: {readOnlyRootFilesystem: false}
"""
    out = render(helm, values=values)
    worker_pod = _pod(out, "worker")["securityContext"]
    assert worker_pod["runAsUser"] == 20000 and worker_pod["runAsNonRoot"] is True
    assert worker_pod["fsGroupChangePolicy"] == "OnRootMismatch"
    assert worker_pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert out.container("worker")["securityContext"]["capabilities"] == {
        "drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert _pod(out, "scheduler")["securityContext"]["runAsUser"] == 10001
    scheduler = out.container("scheduler")["securityContext"]
    assert scheduler["readOnlyRootFilesystem"] is False
    assert scheduler["allowPrivilegeEscalation"] is False
    # the helm test pod keeps the global contexts
    (test_pod,) = [o for o in out.objects if o["kind"] == "Pod"]
    assert test_pod["spec"]["securityContext"]["runAsUser"] == 10001


def test_scheduler_env_and_env_from(helm):
    values = """
scheduler:
  extraEnv: [{name: DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES, value: "5"}]
  extraEnvFrom: [{configMapRef: {name: dask-config}}]
"""
    scheduler = render(helm, values=values).container("scheduler")
    assert scheduler["env"] == [{"name": "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES",
                                 "value": "5"}]
    assert scheduler["envFrom"] == [{"configMapRef": {"name": "dask-config"}}]
    plain = render(helm).container("scheduler")
    assert "env" not in plain and "envFrom" not in plain


@pytest.mark.parametrize("component", ["worker", "scheduler"])
def test_extra_volumes_and_mounts(helm, component):
    """E.g. a CA bundle for uv and fsspec behind a TLS-intercepting proxy."""
    values = f"""
{component}:
  extraVolumes: [{{name: ca, configMap: {{name: corporate-ca}}}}]
  extraVolumeMounts: [{{name: ca, mountPath: /etc/ssl/corp, readOnly: true}}]
"""
    out = render(helm, values=values)
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in _pod(out, component)["volumes"]
    mounts = out.container(component)["volumeMounts"]
    assert mounts[-1] == {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}
    assert mounts[0] == {"name": "tmp", "mountPath": "/tmp"}


# ---- the scheduler Service, Ingress and ServiceMonitor --------------------------------

def test_scheduler_service_load_balancer_fields(helm):
    values = """
scheduler:
  service:
    type: LoadBalancer
    annotations: {service.beta.kubernetes.io/aws-load-balancer-internal: "true"}
    loadBalancerIP: 10.1.2.3
    loadBalancerSourceRanges: [10.0.0.0/8]
"""
    svc = render(helm, values=values).one("Service")
    assert svc["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true"}
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerIP"] == "10.1.2.3"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    plain = render(helm).one("Service")
    assert "annotations" not in plain["metadata"] and "loadBalancerIP" not in plain["spec"]


def test_dashboard_ingress_with_tls(helm):
    values = """
scheduler:
  ingress:
    enabled: true
    className: nginx
    annotations: {nginx.ingress.kubernetes.io/auth-type: basic}
    hosts: [dask.example.com]
    tls: [{hosts: [dask.example.com], secretName: dask-tls}]
"""
    ingress = render(helm, values=values).one("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/auth-type": "basic"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["dask.example.com"], "secretName": "dask-tls"}]
    assert ingress["spec"]["rules"] == [{"host": "dask.example.com", "http": {"paths": [{
        "path": "/", "pathType": "Prefix", "backend": {"service": {
            "name": "mo-modelops-dask-scheduler", "port": {"name": "dashboard"}}}}]}}]


def test_dashboard_ingress_without_hosts_serves_every_host(helm):
    ingress = render(helm, values="scheduler: {ingress: {enabled: true}}").one("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule and "tls" not in ingress["spec"]
    assert not [o for o in render(helm).objects if o["kind"] == "Ingress"]


def test_scheduler_service_monitor(helm):
    out = render(helm, values="metrics: {serviceMonitor: {enabled: true, interval: 15s, "
                              "labels: {release: prometheus}}}", extra=API_VERSIONS)
    monitor = out.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "dashboard", "path": "/metrics",
                                             "interval": "15s"}]
    # it selects the scheduler Service by that Service's labels
    service_labels = out.one("Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert {p["name"] for p in out.one("Service")["spec"]["ports"]} >= {"dashboard"}


# ---- memory quantities -------------------------------------------------------------

@pytest.mark.parametrize("memory,mi", [
    ("1536Mi", 1536), ("1.5Gi", 1536), ("2G", 1908), ("1536M", 1465), ("1048576", 1),
    ("524288Ki", 512), ("0.5Ti", 524288), ("1000000k", 954),
])
def test_every_kubernetes_memory_form_the_runtime_reads_is_accepted(helm, memory, mi):
    """Pod memory is computed in Mi, rounded up; the value itself reaches dask as written."""
    out = render(helm, values=f"worker: {{memoryPerProcess: '{memory}'}}")
    worker = out.container("worker")
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == memory
    # 4 × (memoryPerProcess + 2048Mi pool) + 512Mi
    assert worker["resources"]["limits"]["memory"] == f"{4 * (mi + 2048) + 512}Mi"


# ---- scale-down ------------------------------------------------------------------------

@pytest.mark.parametrize("values, grace", [
    ("", 70),                                                    # no task timeout: 30 + 40
    ("worker: {executor: {taskTimeout: 600}}", 640),             # derived: timeout + 40
    ("worker: {executor: {taskTimeout: 600}, terminationGracePeriodSeconds: 5}", 5),
    ("worker: {terminationGracePeriodSeconds: 0}", 0),           # overridden, even to 0
])
def test_worker_grace_period_is_derived_from_the_task_timeout(helm, values, grace):
    """SIGTERM retires a worker through the scheduler and lets running tasks finish within
    the task timeout: the pod's grace period covers that plus the hand-over."""
    pod = _pod(render(helm, values=values or None), "worker")
    assert pod["terminationGracePeriodSeconds"] == grace


def test_a_negative_grace_period_is_refused(helm):
    out = render(helm, values="worker: {terminationGracePeriodSeconds: -1}")
    assert out.returncode != 0 and "kind:" not in out.stdout
    assert "terminationGracePeriodSeconds" in out.stderr, out.stderr
