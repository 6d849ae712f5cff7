"""What the autoscaling tests share: a release of the chart with worker.autoscaling installed
into the test control plane, the same values rendered as local processes, and the study
they run.

- covers: :func:`release` (namespace, helm install, the rendered plan, the kubelet stand-in,
  the scheduler on the dashboard port the ScaledObject's URL names), the HPA's evidence
  (:func:`hpa_events`, :func:`hpa`), the Deployment's replica count, the test study.
- does not: assert anything about scaling (the tests do).
- see also: kubelet.py, support/keda.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubelet import Kubelet
from modelops_runtime.local.cluster.launch import plan as launch_plan
from modelops_runtime.local.cluster.render import render_cluster
from support.cluster import wait_for
from support.controlplane import ControlPlane
from support.paths import CHART, MY_VALUES, PRESETS_DIR, helm_binary
from support.ports import hold_ports
from support.wheels import build_wheel, offline_uv_env

RELEASE = "sims"
LOCAL_REPO = "file:///var/lib/modelops/bundle-repo"
WORKER = f"{RELEASE}-modelops-dask-worker"
HPA = WORKER                          # advanced.horizontalPodAutoscalerConfig.name

# a model whose runs take a while (so the backlog is visible to the scheduler's adaptive
# target) and whose last `tail` seeds take `long` seconds (so the study is still running
# when the backlog has drained and the autoscaler removes pods)
MODEL = """
import os
import time

import tinydep


def simulate(params, seed):
    last = seed >= params["sims"] - params["tail"]
    time.sleep(params["long"] if last else params["short"])
    return {"seed": seed, "pid": os.getpid(), "dep": tinydep.VALUE}


def total(outputs):
    return {"n": len(outputs), "seeds": sorted(o["seed"] for o in outputs)}
"""


def write_study(root: Path, *, sims: int, short: float, long: float, tail: int) -> Path:
    """A study directory (study.yaml + bundle) whose bundle needs one dependency, built
    as a real wheel into ``root / "wheels"`` (uv installs it offline)."""
    wheels = root / "wheels"
    build_wheel(wheels, "tinydep", "1.0", {"tinydep": "VALUE = 7\n"})
    bundle = root / "study" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "model.py").write_text(textwrap.dedent(MODEL).lstrip())
    (bundle / "requirements.txt").write_text("tinydep==1.0\n")
    (root / "study" / "study.yaml").write_text(textwrap.dedent(f"""\
        name: backlog
        bundle: bundle
        entrypoint: model:simulate
        aggregate: model:total
        params: {{sims: {sims}, tail: {tail}, short: {short}, long: {long}}}
        sims: {sims}
        """))
    return root / "study"


@dataclass
class Release:
    plane: ControlPlane
    namespace: str
    kubelet: Kubelet
    values: list[str]

    def deployment_replicas(self) -> int:
        d = self.plane.api(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{WORKER}")
        return int(d["spec"].get("replicas", 0))

    def hpa(self) -> dict:
        return self.plane.api(f"/apis/autoscaling/v2/namespaces/{self.namespace}/"
                              f"horizontalpodautoscalers/{HPA}")

    def hpa_events(self) -> list[dict]:
        """The HPA controller's events about this release's HPA, oldest first."""
        items = self.plane.api(
            f"/api/v1/namespaces/{self.namespace}/events?fieldSelector="
            f"involvedObject.kind%3DHorizontalPodAutoscaler,involvedObject.name%3D{HPA}")["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e["metadata"]
                      ["creationTimestamp"])

    def keda_events(self) -> list[str]:
        """The reasons of KEDA's events about this release's ScaledObject, oldest first."""
        items = self.plane.api(
            f"/api/v1/namespaces/{self.namespace}/events?fieldSelector="
            f"involvedObject.kind%3DScaledObject,involvedObject.name%3D{WORKER}")["items"]
        items.sort(key=lambda e: e.get("lastTimestamp") or e["metadata"]["creationTimestamp"])
        return [e["reason"] for e in items]

    def scaled_object_ready(self) -> bool:
        so = self.plane.api(f"/apis/keda.sh/v1alpha1/namespaces/{self.namespace}/"
                            f"scaledobjects/{WORKER}")
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in so.get("status", {}).get("conditions", []))

    def describe(self) -> str:
        """The HPA's conditions and events, the kubelet's timeline: a failure's context."""
        lines = []
        with contextlib.suppress(AssertionError):
            for c in self.hpa().get("status", {}).get("conditions", []):
                lines.append(f"  HPA {c['type']}={c['status']} {c.get('reason')}: "
                             f"{c.get('message')}")
        with contextlib.suppress(AssertionError):
            for e in self.hpa_events():
                lines.append(f"  event {e['reason']}: {e['message']}")
        return "\n".join(lines)


def autoscaling_sets(dashboard_port: int, *, min_replicas: int, max_replicas: int,
                     down_window: int, cooldown: int) -> list[str]:
    return ["worker.autoscaling.enabled=true",
            f"worker.autoscaling.cooldownPeriod={cooldown}",
            f"worker.autoscaling.minReplicas={min_replicas}",
            f"worker.autoscaling.maxReplicas={max_replicas}",
            "worker.autoscaling.pollingInterval=1",
            "worker.autoscaling.scaleUpStabilizationSeconds=0",
            f"worker.autoscaling.scaleDownStabilizationSeconds={down_window}",
            f"worker.autoscaling.schedulerURL=http://127.0.0.1:{dashboard_port}"]


@contextlib.contextmanager
def release(plane: ControlPlane, tmp: Path, namespace: str, wheels: Path, *,
            min_replicas: int = 1, max_replicas: int = 3, down_window: int = 0,
            cooldown: int = 300, sets: Sequence[str] = ()) -> Iterator[Release]:
    """Install the chart (helm 3, the prod-warm preset + ``sets``) into a new namespace,
    render the same values into local processes, start the scheduler on the dashboard
    port the ScaledObject names, and follow the worker pods until the block ends."""
    held = hold_ports(1)[0]
    port = held.port
    values = [str(MY_VALUES), str(PRESETS_DIR / "prod-warm.yaml")]
    # a repository the local workers read (not my-values' s3:// one, which the local mode
    # would use as is): in the pods, a volume at that path; locally, the plan's own folder
    all_sets = [f"bundles.repo={LOCAL_REPO}", *autoscaling_sets(port, min_replicas=min_replicas, max_replicas=max_replicas,
                                  down_window=down_window, cooldown=cooldown), *sets]
    plane.api("/api/v1/namespaces", "POST", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}})
    helm = [str(helm_binary("helm3")), "install", RELEASE, str(CHART), "-n", namespace,
            *(a for v in values for a in ("-f", v)), *(a for s in all_sets for a in ("--set", s))]
    out = subprocess.run(helm, capture_output=True, text=True, env=plane.env(), timeout=180)
    assert out.returncode == 0, f"helm install failed:\n{out.stderr}\n{out.stdout[-2000:]}"
    rendered = render_cluster(values, all_sets, chart=CHART, release=RELEASE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    launch = launch_plan(rendered, tmp / "state", base_env={**base, **offline_uv_env(wheels)},
                         release=RELEASE)
    deployment = plane.api(f"/apis/apps/v1/namespaces/{namespace}/deployments/{WORKER}")
    labels = deployment["spec"]["selector"]["matchLabels"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    kubelet = Kubelet(plane, namespace, ",".join(f"{k}%3D{v}" for k, v in labels.items()),
                      launch, float(grace))
    try:
        held.release()
        kubelet.start_scheduler(port)
        kubelet.start()
        yield Release(plane, namespace, kubelet, all_sets)
    finally:
        held.release()
        kubelet.stop()
        # KEDA and the HPA stop following this release (the namespace controller and KEDA's
        # finalizer remove its objects); the next test's release is alone
        with contextlib.suppress(AssertionError):
            plane.api(f"/api/v1/namespaces/{namespace}", "DELETE")


def wait_replicas(rel: Release, want, what: str, timeout: float = 180) -> int:
    """Until the Deployment's spec.replicas satisfies ``want`` (a predicate)."""
    def check():
        rel.kubelet.check()
        n = rel.deployment_replicas()
        return want(n) and (n or True)
    wait_for(check, timeout, what, interval=0.5, on_fail=rel.describe)
    return rel.deployment_replicas()


def now() -> float:
    return time.monotonic()
