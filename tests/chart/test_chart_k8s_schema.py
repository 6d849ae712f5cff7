"""Every rendered object is valid for the oldest and the newest Kubernetes we support,
checked against the strict OpenAPI schemas of kubernetes-validate (unknown fields fail)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

import chartkit
from chartkit import PRESETS, render

_KUBE = yaml.safe_load((chartkit.CHART / "Chart.yaml").read_text())["kubeVersion"]
OLDEST = re.match(r">=\s*(\d+\.\d+\.\d+)", _KUBE).group(1)
NEWEST = kubernetes_validate.utils.latest_version()

# Every optional object and value block switched on at once.
EVERYTHING = """
imagePullSecrets: [{name: registry}]
bundles:
  repo: /var/lib/modelops/bundle-repo
  volume: {persistentVolumeClaim: {claimName: bundle-repo, readOnly: true}}
scheduler:
  extraArgs: ["--idle-timeout", "3600"]
  service: {type: LoadBalancer}
  podAnnotations: {team: sims}
  nodeSelector: {pool: control}
  tolerations: [{key: dedicated, operator: Equal, value: sims, effect: NoSchedule}]
worker:
  replicas: 3
  daskResources: {aggregation: 1, gpu: 2}
  resources:
    requests: {cpu: "2", ephemeral-storage: 10Gi}
    limits: {memory: 16Gi}
  executor: {memLimitPerProcess: 1Gi, taskTimeout: 600, envPassthrough: [OMP_NUM_THREADS]}
  extraEnv:
    - {name: OMP_NUM_THREADS, value: "1"}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
  extraEnvFrom: [{secretRef: {name: s3-credentials}}]
  cache: {venvsExistingClaim: venv-cache}
  podDisruptionBudget: {enabled: true, maxUnavailable: "25%"}
  podAnnotations: {team: sims}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 50
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app.kubernetes.io/component: worker}}
metrics:
  podMonitor: {enabled: true, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  clientFrom: [{namespaceSelector: {matchLabels: {team: modelers}}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
"""
VALUE_SETS = {**{p: (p,) for p in PRESETS}, "defaults": (), "everything": ("everything",)}

# Custom resources have no schema in kubernetes-validate: the PodMonitor (a Prometheus
# Operator CRD) is the one object not validated here.
NOT_VALIDATED = {("monitoring.coreos.com/v1", "PodMonitor")}


def _render(helm: str, name: str, version: str) -> chartkit.Render:
    extra = ("--kube-version", version)
    if name == "everything":
        return render(helm, values=EVERYTHING, extra=extra)
    return render(helm, *VALUE_SETS[name], extra=extra)


def test_supported_range_is_real():
    assert OLDEST in kubernetes_validate.utils.all_versions()
    assert tuple(map(int, OLDEST.split("."))) < tuple(map(int, NEWEST.split(".")))


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_is_valid_kubernetes(helm, name, version):
    objects = _render(helm, name, version).objects
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in NOT_VALIDATED:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for "
                        f"Kubernetes {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked == len(objects) - (1 if name == "everything" else 0)


def test_everything_renders_every_kind(helm):
    kinds = sorted(o["kind"] for o in _render(helm, "everything", NEWEST).objects)
    assert kinds == ["Deployment", "Deployment", "NetworkPolicy", "NetworkPolicy",
                     "Pod", "PodDisruptionBudget", "PodMonitor", "Service"]
