"""worker.autoscaling against the real API server with KEDA's own CRDs (from the pinned
KEDA module, ci/tools/keda, through support/keda.py): helm 3 and 4 install the
ScaledObject and the API server keeps it as rendered; the worker Deployment carries no
replicas, so helm upgrade leaves the count the autoscaler set; on scale-down the ReplicaSet controller removes a pod that is not ready
yet, else the one ready for the shortest time (the coldest caches), and gives it the
derived terminationGracePeriodSeconds to retire its Dask workers.

The scaling loop itself (KEDA's operator and metrics server, the HPA controller, a real
scheduler under load) is tested in tests/cluster/autoscaling/."""

from __future__ import annotations

import datetime
import json
import shutil
import time

import pytest

from kubekit import CHART, RELEASE, docs, kept, values_args
from support import keda
from support.cluster import wait_for

ON = ("worker.autoscaling.enabled=true",)
KEDA = ("--api-versions", "keda.sh/v1alpha1/ScaledObject")  # helm template asks no cluster
WORKER = f"{RELEASE}-modelops-dask-worker"


@pytest.fixture(scope="module")
def keda_crds(kube):
    """KEDA's CRDs (support/keda.py: .tools/keda-crds, copied from the pinned module by
    `make tool-keda`) applied to the session's control plane."""
    if not keda.CRDS.is_dir() and shutil.which("go") is None:
        pytest.skip("no Go to build KEDA, whose CRDs these tests apply: install Go 1.26+ and "
                    "run `make tool-keda`")
    keda.apply_crds(kube.plane)


def _install(kube, helm, namespace, *sets, preset="prod-warm"):
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace,
                    *values_args(preset, *ON, *sets))
    assert "STATUS: deployed" in out.stdout
    assert "Warning" not in out.stderr, out.stderr
    return out


def test_install_keeps_the_scaled_object_and_leaves_the_count_to_it(kube, helm, namespace,
                                                                    keda_crds):
    out = _install(kube, helm, namespace, "worker.autoscaling.minReplicas=0",
                   "worker.autoscaling.maxReplicas=6", "networkPolicy.enabled=true",
                   "scheduler.ingress.enabled=true")
    # NOTES (helm install --dry-run takes no --api-versions: only a cluster shows them)
    assert "workers:        up to 6 pod(s) (autoscaled, 0 to 6) × 4 processes" in out.stdout
    assert ("Autoscaling (KEDA)\n  worker pods:    0 to 6, ceil(the scheduler's adaptive "
            "target ÷ 4 processes per pod)") in out.stdout
    assert (f"target:         http://{RELEASE}-modelops-dask-scheduler.{namespace}.svc:8787"
            "/api/v1/adaptive_target (read every 15s)") in out.stdout
    assert "to 0 pods 300s after the last demand" in out.stdout
    assert f"kubectl -n {namespace} get scaledobject,hpa {WORKER} -w" in out.stdout
    assert f"kubectl -n {namespace} describe hpa {WORKER}" in out.stdout
    assert ("WARNING: scheduler.ingress is enabled and worker.autoscaling publishes Dask's "
            "/api/v1 routes on the dashboard port, which include POST /api/v1/retire_workers"
            ) in out.stdout

    sent = docs(kube.helm(helm, "get", "manifest", RELEASE, "-n", namespace).stdout)
    assert "ScaledObject" in {o["kind"] for o in sent}
    for obj in sent:
        live = kube.get(obj["kind"].lower() + "." + obj["apiVersion"].split("/")[0]
                        if "." in obj["apiVersion"] else obj["kind"].lower(),
                        obj["metadata"]["name"], "-n", namespace)
        diff = kept(obj, live)
        assert not diff, f"{obj['kind']}/{obj['metadata']['name']} not kept:\n" + "\n".join(diff)
    (rendered,) = [o for o in sent if o["kind"] == "Deployment" and o["metadata"]["name"] == WORKER]
    assert "replicas" not in rendered["spec"]
    kube.wait_rolled(namespace, "worker")
    assert kube.deployment(namespace, "worker")["spec"]["replicas"] == 1  # the API's default
    assert not kube.warnings(namespace)

    # the HPA scales through the Deployment's scale subresource; helm upgrade keeps its count
    kube.kubectl("scale", "deployment", WORKER, "-n", namespace, "--replicas=3")
    kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
              *values_args("prod-warm", *ON, "worker.autoscaling.minReplicas=0",
                           "worker.autoscaling.maxReplicas=8", "networkPolicy.enabled=true",
                           "scheduler.ingress.enabled=true"))
    assert kube.deployment(namespace, "worker")["spec"]["replicas"] == 3
    so = kube.get("scaledobject.keda.sh", WORKER, "-n", namespace)
    assert so["spec"]["maxReplicaCount"] == 8

    kube.helm(helm, "uninstall", RELEASE, "-n", namespace, "--wait")
    assert kube.leftovers(namespace) == []
    assert kube.get("scaledobjects.keda.sh", "-n", namespace)["items"] == []


def test_server_dry_run_accepts_every_value(kube, helm, namespace, keda_crds):
    """Full server-side validation of the ScaledObject against KEDA's CRD schema (every
    field the chart renders is one KEDA knows: the server would prune an unknown one)."""
    sets = ("worker.autoscaling.minReplicas=0", "worker.autoscaling.maxReplicas=50",
            "worker.autoscaling.pollingInterval=5", "worker.autoscaling.cooldownPeriod=60",
            "worker.autoscaling.scaleUpStabilizationSeconds=30",
            "worker.autoscaling.scaleDownStabilizationSeconds=3600",
            "worker.autoscaling.schedulerURL=http://127.0.0.1:38787", "worker.processes=2")
    manifest = kube.template(helm, *values_args("fresh-process", *ON, *sets), *KEDA,
                             namespace=namespace)
    out = kube.kubectl("apply", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                       input_text=manifest, check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    returned = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(out.stdout)["items"]}
    (so,) = [o for o in docs(manifest) if o["kind"] == "ScaledObject"]
    diff = kept(so, returned[("ScaledObject", WORKER)])
    assert not diff, "the API server pruned or changed:\n" + "\n".join(diff)
    assert kube.leftovers(namespace) == []


def test_switching_autoscaling_on_and_off_with_helm_upgrade(kube, helm, namespace, keda_crds):
    """A fixed release of 2 pods switched to autoscaling and back: the ScaledObject comes and
    goes with it, the pod template stays (no rollout); the switch drops the Deployment to
    Kubernetes' default of 1 pod until the HPA acts (documented)."""
    kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace,
              *values_args("prod-warm", "worker.replicas=2"))
    template = kube.deployment(namespace, "worker")["spec"]["template"]
    kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
              *values_args("prod-warm", *ON, "worker.autoscaling.minReplicas=2"))
    assert kube.get("scaledobject.keda.sh", WORKER, "-n", namespace)["spec"]["minReplicaCount"] == 2
    after = kube.deployment(namespace, "worker")
    # helm removes the replicas it sent before, so the API server's default (1) applies
    # until the HPA acts: the one-time drop the docs' "Autoscaling" warns about
    assert after["spec"]["replicas"] == 1
    assert after["spec"]["template"] == template  # no rollout: the pods keep their caches
    kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
              *values_args("prod-warm", "worker.replicas=4"))
    assert kube.get("scaledobjects.keda.sh", "-n", namespace)["items"] == []
    assert kube.deployment(namespace, "worker")["spec"]["replicas"] == 4


# -- which pod a scale-down removes ---------------------------------------------------------

def _pods(kube, namespace) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in kube.get(
        "pods", "-n", namespace, "-l", "app.kubernetes.io/component=worker")["items"]
        if not p["metadata"].get("deletionTimestamp")}


def _scale(kube, namespace, n: int) -> dict[str, dict]:
    kube.kubectl("scale", "deployment", WORKER, "-n", namespace, f"--replicas={n}")
    return wait_for(lambda: (lambda p: p if len(p) == n else None)(_pods(kube, namespace)),
                    90, f"{n} worker pods", interval=0.2, on_fail=kube.plane.logs)


def _next_second() -> None:
    """Creation timestamps have whole seconds: the next pod must be visibly younger."""
    now = int(time.time())
    wait_for(lambda: int(time.time()) > now, 5, "the clock's next second", interval=0.05)


def _ready(kube, namespace, pod: str, since: datetime.datetime) -> None:
    """What a kubelet reports for a started pod (no kubelet here): Running and Ready."""
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": stamp}]}}
    kube.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps(status))


def test_scale_down_removes_the_coldest_pod_and_lets_it_retire(kube, namespace, keda_crds):
    """What the docs say about scale-down: a pod not ready yet goes first; among ready pods
    the one ready for the shortest time (the newest, with the coldest venv and bundle
    caches) goes; the removed pod has terminationGracePeriodSeconds = taskTimeout + 40 to
    retire its Dask workers (worker/hooks/retire.py)."""
    _install(kube, "helm3", namespace, "worker.executor.taskTimeout=600",
             "worker.autoscaling.minReplicas=1")
    first = _scale(kube, namespace, 1)
    (old,) = first
    assert first[old]["spec"]["terminationGracePeriodSeconds"] == 640
    now = datetime.datetime.now(datetime.timezone.utc)
    _ready(kube, namespace, old, now - datetime.timedelta(hours=2))
    _next_second()
    (warm,) = set(_scale(kube, namespace, 2)) - {old}
    _ready(kube, namespace, warm, now - datetime.timedelta(minutes=30))
    _next_second()
    _scale(kube, namespace, 3)  # a third pod, still starting (Pending, not ready)

    assert set(_scale(kube, namespace, 2)) == {old, warm}, "a pod still starting goes first"
    _next_second()
    (cold,) = set(_scale(kube, namespace, 3)) - {old, warm}
    _ready(kube, namespace, cold, now)
    assert set(_scale(kube, namespace, 2)) == {old, warm}, "the newest ready pod goes first"
    assert set(_scale(kube, namespace, 1)) == {old}
    deleted = [e for e in kube.events(namespace, "reason=SuccessfulDelete")]
    assert len(deleted) >= 3
