"""Every rendered object is valid for the oldest and the newest Kubernetes we support,
checked against the strict OpenAPI schemas of kubernetes-validate (unknown fields fail)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

import chartkit
from chartkit import API_VERSIONS, PRESETS, render

_KUBE = yaml.safe_load((chartkit.CHART / "Chart.yaml").read_text())["kubeVersion"]
OLDEST = re.match(r">=\s*(\d+\.\d+\.\d+)", _KUBE).group(1)
NEWEST = kubernetes_validate.utils.latest_version()

# Every optional object and value block switched on at once.
EVERYTHING = """
mode: debug-parallel
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
imagePullSecrets: [{name: registry}]
serviceAccount:
  create: true
  annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/bundles"}
podSecurityContext: {runAsUser: 10002}
bundles:
  repo: /var/lib/modelops/bundle-repo
  volume: {persistentVolumeClaim: {claimName: bundle-repo, readOnly: true}}
scheduler:
  extraArgs: ["--idle-timeout", "3600"]
  extraEnv: [{name: DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING, value: "False"}]
  extraEnvFrom: [{configMapRef: {name: dask-config}}]
  service:
    type: LoadBalancer
    annotations: {service.beta.kubernetes.io/aws-load-balancer-internal: "true"}
    loadBalancerIP: 10.0.0.10
    loadBalancerSourceRanges: [10.0.0.0/8, "2001:db8::/32"]
  ingress:
    enabled: true
    className: nginx
    annotations: {nginx.ingress.kubernetes.io/auth-type: basic}
    hosts: [dask.example.com]
    tls: [{hosts: [dask.example.com], secretName: dask-tls}]
  readinessProbe: {periodSeconds: 10, successThreshold: 2}
  livenessProbe: {enabled: false}
  extraVolumes: [{name: config, configMap: {name: dask-config}}]
  extraVolumeMounts: [{name: config, mountPath: /etc/dask, readOnly: true}]
  podSecurityContext: {runAsGroup: 10003}
  containerSecurityContext: {privileged: false}
  priorityClassName: system-cluster-critical
  podAnnotations: {team: sims}
  nodeSelector: {pool: control}
  tolerations: [{key: dedicated, operator: Equal, value: sims, effect: NoSchedule}]
worker:
  replicas: 3
  threads: 1
  memoryPerProcess: 1.5Gi
  memoryOverhead: 600M
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  readinessProbe: {initialDelaySeconds: 5, failureThreshold: 3}
  livenessProbe: {timeoutSeconds: 10, terminationGracePeriodSeconds: 30}
  extraVolumes: [{name: ca, configMap: {name: corporate-ca}}]
  extraVolumeMounts: [{name: ca, mountPath: /etc/ssl/corp, readOnly: true}]
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}
    - maxSkew: 2
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: DoNotSchedule
      labelSelector: {matchLabels: {app.kubernetes.io/component: worker}}
  priorityClassName: sims-high
  podSecurityContext: {fsGroupChangePolicy: OnRootMismatch}
  containerSecurityContext: {runAsUser: 10005}
  daskResources: {aggregation: 1, gpu: 2}
  resources:
    requests: {cpu: "2", ephemeral-storage: 10Gi}
    limits: {memory: 16Gi}
  executor: {memLimitPerProcess: 1Gi, poolMemoryPerProcess: 2500M, taskTimeout: 600,
             envPassthrough: [OMP_NUM_THREADS, SSL_CERT_FILE]}
  extraEnv:
    - {name: MY_SETTING, value: "1"}
    - {name: SSL_CERT_FILE, value: /etc/ssl/corp/ca.pem}
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
  serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  clientFrom: [{namespaceSelector: {matchLabels: {team: modelers}}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
"""
VALUE_SETS = {**{p: (p,) for p in PRESETS}, "defaults": (), "everything": ("everything",),
              **{f"mode={p}": ("mode", p) for p in PRESETS}}

# Custom resources have no schema in kubernetes-validate: the PodMonitor and the
# ServiceMonitor (Prometheus Operator CRDs) are the objects not validated here.
NOT_VALIDATED = {("monitoring.coreos.com/v1", "PodMonitor"),
                 ("monitoring.coreos.com/v1", "ServiceMonitor")}


def _render(helm: str, name: str, version: str) -> chartkit.Render:
    extra = ("--kube-version", version)
    if name == "everything":  # with the Prometheus Operator's CRDs
        return render(helm, values=EVERYTHING, extra=extra + API_VERSIONS)
    if name.startswith("mode="):
        return render(helm, sets=(name,), extra=extra)
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
    assert checked == len(objects) - (len(NOT_VALIDATED) if name == "everything" else 0)


def test_everything_renders_every_kind(helm):
    kinds = sorted(o["kind"] for o in _render(helm, "everything", NEWEST).objects)
    assert kinds == ["Deployment", "Deployment", "Ingress", "NetworkPolicy", "NetworkPolicy",
                     "Pod", "PodDisruptionBudget", "PodMonitor", "Service", "ServiceAccount",
                     "ServiceMonitor"]
