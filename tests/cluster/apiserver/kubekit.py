"""kubectl and helm (3 and 4) against the test control plane, and the checks the chart tests
share: a restricted namespace, what a release left in it, ReplicaSets and admitted pods,
objects as the API server keeps them."""

from __future__ import annotations

import collections
import json
import subprocess
from dataclasses import dataclass

import yaml

from support.cluster import wait_for
from support.controlplane import ControlPlane

from support.paths import (CHART, HELMS, MY_VALUES, PRESETS, PRESETS_DIR, REPO, TOOLS,
                           helm_binary)

__all__ = ["CHART", "HELMS", "MY_VALUES", "PRESETS", "PRESETS_DIR", "REPO", "TOOLS",
           "helm_binary"]

RELEASE = "sims"
# The ServiceAccount the controllers need before pods can be created in a namespace.
SA_TIMEOUT = 60
ROLLOUT_TIMEOUT = 90

# What the session did, for the summary line at its end (conftest.pytest_terminal_summary).
SESSION: dict[str, object] = {}
CASES: collections.Counter[str] = collections.Counter()


def values_args(preset: str | None = "prod-warm", *sets: str, mine: bool = True) -> list[str]:
    """`-f my-values.yaml -f values-examples/<preset>.yaml --set ...` as a user writes it."""
    args = ["-f", str(MY_VALUES)] if mine else []
    if preset:
        args += ["-f", str(PRESETS_DIR / f"{preset}.yaml")]
    for s in sets:
        args += ["--set", s]
    return args


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Kube:
    plane: ControlPlane

    # -- commands ---------------------------------------------------------------------
    def _run(self, cmd: list[str], input_text: str | None, check: bool,
             timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True,
                              env=self.plane.env(), cwd=REPO, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                                 f"{proc.stderr}\n{proc.stdout[-2000:]}")
        return proc

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run([str(TOOLS / "kubectl"), *args], input_text, check, timeout)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def helm(self, which: str, *args: str, check: bool = True, input_text: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
        """Run helm 3 or 4; install/upgrade/rollback runs are counted for the summary."""
        if args and args[0] in ("install", "upgrade", "rollback") and "--dry-run" not in " ".join(args):
            CASES[args[0]] += 1
        return self._run([str(helm_binary(which)), *args], input_text, check, timeout)

    def template(self, which: str, *values: str, namespace: str = "sims") -> str:
        return self.helm(which, "template", RELEASE, str(CHART), "-n", namespace,
                         *values).stdout

    # -- namespaces -------------------------------------------------------------------
    def restricted_namespace(self, name: str) -> str:
        """A new namespace where Pod Security enforces (and warns about) `restricted`, ready
        for pods: its `default` ServiceAccount exists."""
        name = name.lower().replace("_", "-")[:63].strip("-")
        self.kubectl("create", "namespace", name)
        self.kubectl("label", "namespace", name,
                     "pod-security.kubernetes.io/enforce=restricted",
                     "pod-security.kubernetes.io/warn=restricted",
                     "pod-security.kubernetes.io/audit=restricted")
        wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", name,
                                      check=False).returncode == 0,
                 SA_TIMEOUT, f"the controller-manager to create namespace {name}'s "
                 "default ServiceAccount", interval=0.2, on_fail=self.plane.logs)
        return name

    def leftovers(self, namespace: str) -> list[str]:
        """Every object a release could have left in ``namespace`` (workloads, services,
        pods, policies, helm's release secrets), as kind/name."""
        found = self.get("deployments,replicasets,pods,services,poddisruptionbudgets,"
                         "networkpolicies,secrets,configmaps", "-n", namespace)["items"]
        return [f"{o['kind']}/{o['metadata']['name']}" for o in found
                if o["metadata"]["name"] != "kube-root-ca.crt"]

    def events(self, namespace: str, *selectors: str) -> list[dict]:
        args = ["events", "-n", namespace]
        if selectors:
            args += ["--field-selector", ",".join(selectors)]
        return self.get(*args)["items"]

    def warnings(self, namespace: str) -> list[tuple[str, str]]:
        """(reason, message) of the namespace's Warning events, except the API server's own
        ClusterIP repair loop: it reports a Service it saw before the Service's IP
        allocation was visible to it (a race inside kube-apiserver, seen once in ~60
        installs and upgrades; no object of the chart is at fault) and repairs nothing."""
        return [(e.get("reason", ""), e.get("note") or e.get("message", ""))
                for e in self.events(namespace, "type=Warning")
                if not (e.get("reportingController") == "ipallocator-repair-controller"
                        or e.get("action") == "ClusterIPAllocation")]

    # -- workloads --------------------------------------------------------------------
    def deployment(self, namespace: str, component: str) -> dict:
        return self.get("deployment", f"{RELEASE}-modelops-dask-{component}", "-n", namespace)

    def replicasets(self, namespace: str, component: str) -> list[dict]:
        return self.get("replicasets", "-n", namespace, "-l",
                        f"app.kubernetes.io/component={component}")["items"]

    def wait_rolled(self, namespace: str, component: str) -> dict:
        """Wait until the controller-manager has seen the Deployment's latest generation and
        its current ReplicaSet has created all its pods (so every pod was admitted); fail
        at once with the event's message when a pod creation is refused. Returns the
        current ReplicaSet."""
        def current():
            failed = self.events(namespace, "reason=FailedCreate")
            if failed:
                raise AssertionError("pods refused: " + "; ".join(e["message"] for e in failed))
            dep = self.deployment(namespace, component)
            if dep.get("status", {}).get("observedGeneration") != dep["metadata"]["generation"]:
                return None
            revision = dep["metadata"].get("annotations", {}).get(
                "deployment.kubernetes.io/revision")
            for rs in self.replicasets(namespace, component):
                if (rs["metadata"].get("annotations", {}).get(
                        "deployment.kubernetes.io/revision") == revision
                        and rs.get("status", {}).get("replicas", 0) == rs["spec"]["replicas"]
                        and rs["spec"]["replicas"] == dep["spec"]["replicas"]):
                    return rs
            return None
        return wait_for(current, ROLLOUT_TIMEOUT,
                        f"the {component} Deployment in {namespace} to get its ReplicaSet "
                        "and pods", interval=0.3, on_fail=self.plane.logs)


def kept(rendered, live, path: str = "") -> list[str]:
    """Where ``live`` (an object read back from the API server) does not keep what
    ``rendered`` says: every rendered field must be there with the same value (the server
    may add defaults). Returns the differences as readable lines."""
    if isinstance(rendered, dict):
        if not isinstance(live, dict):
            return [f"{path}: rendered a mapping, server has {live!r}"]
        out = []
        for k, v in rendered.items():
            if k not in live:
                out.append(f"{path}.{k}: rendered {v!r}, dropped by the server")
            else:
                out += kept(v, live[k], f"{path}.{k}")
        return out
    if isinstance(rendered, list):
        if not isinstance(live, list) or len(live) != len(rendered):
            return [f"{path}: rendered {rendered!r}, server has {live!r}"]
        return [d for i, (r, v) in enumerate(zip(rendered, live)) for d in kept(r, v, f"{path}[{i}]")]
    if rendered == live or str(rendered) == str(live):  # 4 (a number) is kept as "4"
        return []
    return [f"{path}: rendered {rendered!r}, server has {live!r}"]
