"""What only the API server caught when the chart was first sent to one, each now refused by
the chart before helm sends anything: by values.schema.json (a field alone) or at render
time (chart/templates/_validate*.tpl, combinations), each with its own message. For each, the unguarded object is sent to the server (kubectl apply
--dry-run=server) to prove the server does refuse (or silently drop) it: the chart's check
guards against a real failure, not an imagined one."""

from __future__ import annotations

import copy
import json

import pytest

import kubekit
from kubekit import CHART, RELEASE, docs, values_args


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


# id: (--set values, the chart's message, component whose Deployment is patched, patch of
# the valid rendered Deployment that sends the same thing unguarded, what the server says)
CASES = {
    "scheduler-memory-request-above-limit": (
        ["scheduler.resources.requests.memory=2Gi"],
        "scheduler.resources.requests.memory (2Gi) is above scheduler.resources.limits.memory (1Gi)",
        "scheduler",
        lambda d: _container(d)["resources"]["requests"].update(memory="2Gi"),
        "must be less than or equal to memory limit"),
    "worker-ephemeral-storage-request-above-limit": (
        ["worker.resources.requests.ephemeral-storage=2Gi",
         "worker.resources.limits.ephemeral-storage=1Gi"],
        "worker.resources.requests.ephemeral-storage (2Gi) is above "
        "worker.resources.limits.ephemeral-storage (1Gi)",
        "worker",
        lambda d: (_container(d)["resources"]["requests"].update({"ephemeral-storage": "2Gi"}),
                   _container(d)["resources"]["limits"].update({"ephemeral-storage": "1Gi"})),
        "must be less than or equal to ephemeral-storage limit"),
    "toleration-exists-with-value": (
        ["worker.tolerations[0].key=dedicated", "worker.tolerations[0].operator=Exists",
         "worker.tolerations[0].value=sims"],
        "worker.tolerations[0] has operator Exists and a value",
        "worker",
        lambda d: _pod_spec(d).update(tolerations=[
            {"key": "dedicated", "operator": "Exists", "value": "sims"}]),
        "value must be empty when `operator` is 'Exists'"),
    "node-selector-key-not-a-label-key": (
        ["worker.nodeSelector.bad key=x"],
        "at '/worker/nodeSelector': additional properties 'bad key' not allowed",
        "worker",
        lambda d: _pod_spec(d).update(nodeSelector={"bad key": "x"}),
        "name part must consist of alphanumeric characters"),
    "allow-privilege-escalation": (
        ["containerSecurityContext.allowPrivilegeEscalation=true"],
        "containerSecurityContext.allowPrivilegeEscalation=true",
        "worker",
        lambda d: _container(d)["securityContext"].update(allowPrivilegeEscalation=True),
        'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'),
    "misspelt-toleration-field": (
        ["worker.tolerations[0].key=dedicated", "worker.tolerations[0].operater=Exists"],
        "at '/worker/tolerations/0': additional properties 'operater' not allowed",
        "worker",
        lambda d: _pod_spec(d).update(tolerations=[{"key": "dedicated", "operater": "Exists"}]),
        'unknown field "spec.template.spec.tolerations[0].operater"'),
}


@pytest.mark.parametrize("case", CASES)
def test_chart_refuses_what_the_server_would(kube, helm, namespace, case):
    sets, message, *_ = CASES[case]
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace,
                    *values_args("prod-warm", *sets), check=False)
    assert out.returncode != 0, out.stdout
    assert message in out.stderr, out.stderr
    assert kube.leftovers(namespace) == []
    kubekit.CASES["refused install"] += 1
    # an upgrade with such values is refused before anything changes (no half-switched mode)
    kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *values_args("prod-warm"))
    worker = kube.deployment(namespace, "worker")
    out = kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
                    *values_args("debug-isolated", *sets), check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert kube.deployment(namespace, "worker")["metadata"]["generation"] == \
        worker["metadata"]["generation"]
    assert "failed" not in kube.helm(helm, "history", RELEASE, "-n", namespace).stdout


@pytest.mark.parametrize("case", CASES)
def test_server_refuses_the_unguarded_object(kube, namespace, case):
    _, _, component, patch, server_says = CASES[case]
    (dep,) = [o for o in docs(kube.template("helm3", *values_args("prod-warm"),
                                            namespace=namespace))
              if o["kind"] == "Deployment"
              and o["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    patch(dep)
    if case == "allow-privilege-escalation":
        # Pod Security only warns about a Deployment; it refuses the pods the ReplicaSet
        # would create (helm said `deployed`, then every pod creation failed): send a pod.
        dep = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "unguarded", **{k: v for k, v in
                                                    dep["spec"]["template"]["metadata"].items()
                                                    if k == "labels"}},
               "spec": copy.deepcopy(dep["spec"]["template"]["spec"])}
    # as helm sends objects: unknown fields are a warning (kubectl's default is strict)
    out = kube.kubectl("apply", "-n", namespace, "--dry-run=server", "--validate=warn",
                       "-o", "json", "-f", "-", input_text=json.dumps(dep), check=False)
    said = out.stderr
    assert server_says in said, said
    if case == "misspelt-toleration-field":  # accepted with a warning, the field dropped
        assert out.returncode == 0
        assert _pod_spec(json.loads(out.stdout))["tolerations"] == [{"key": "dedicated"}]
    else:
        assert out.returncode != 0
    assert kube.leftovers(namespace) == []


def test_pod_monitor_needs_its_crd(kube, helm, namespace):
    """Without the Prometheus Operator's CRD the chart refuses a PodMonitor with its own
    message (.Capabilities.APIVersions); the server alone says only `no matches for kind`.
    With the CRD the same install succeeds and the PodMonitor is stored."""
    enabled = values_args("prod-warm", "metrics.podMonitor.enabled=true")
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *enabled,
                    check=False)
    assert out.returncode != 0
    assert "metrics.podMonitor.enabled=true needs the PodMonitor CRD" in out.stderr, out.stderr
    assert kube.leftovers(namespace) == []
    (pm,) = [o for o in docs(kube.template(helm, *enabled, "--api-versions",
                                           "monitoring.coreos.com/v1/PodMonitor",
                                           namespace=namespace)) if o["kind"] == "PodMonitor"]
    out = kube.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", "-",
                       input_text=json.dumps(pm), check=False)
    assert out.returncode != 0 and 'no matches for kind "PodMonitor"' in out.stderr, out.stderr

    kube.kubectl("apply", "-f", "-", input_text=json.dumps(POD_MONITOR_CRD))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/podmonitors.monitoring.coreos.com")
    try:
        kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *enabled)
        assert kube.get("podmonitors", "-n", namespace)["items"][0]["spec"]["selector"] == \
            pm["spec"]["selector"]
        kube.helm(helm, "uninstall", RELEASE, "-n", namespace)
    finally:
        kube.kubectl("delete", "crd", "podmonitors.monitoring.coreos.com", "--wait=true",
                     "--timeout=60s")


# A minimal stand-in for the Prometheus Operator's CRD: same group, version, kind; any spec.
POD_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "PodMonitor", "listKind": "PodMonitorList",
                       "plural": "podmonitors", "singular": "podmonitor"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}
