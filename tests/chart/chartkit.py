"""Rendering the real chart with the real helm binaries (helm 3 and helm 4).

Every (helm, values, --set) combination is rendered once per test session: helm template
costs 0.1–0.3 s and the suites ask for the same renders many times.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.paths import CHART, HELMS, MY_VALUES, PRESETS, PRESETS_DIR, REPO, helm_binary

__all__ = ["CHART", "HELMS", "MY_VALUES", "PRESETS", "PRESETS_DIR", "REPO", "helm_binary"]

RELEASE = "mo"
NAMESPACE = "sims"

# The Prometheus Operator's CRDs as a cluster serving them reports them: without them the
# chart refuses metrics.podMonitor/serviceMonitor (.Capabilities.APIVersions).
API_VERSIONS = ("--api-versions", "monitoring.coreos.com/v1/PodMonitor",
                "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")

MY_REPO = yaml.safe_load(MY_VALUES.read_text())["bundles"]["repo"]


@dataclass(frozen=True)
class Render:
    returncode: int
    stdout: str
    stderr: str

    @functools.cached_property
    def objects(self) -> list[dict]:
        assert self.returncode == 0, f"helm failed:\n{self.stderr}"
        return [d for d in yaml.safe_load_all(self.stdout) if d]

    def one(self, kind: str, component: str | None = None) -> dict:
        found = [o for o in self.objects if o["kind"] == kind and (
            component is None
            or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)]
        assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
        return found[0]

    def container(self, component: str) -> dict:
        pod = self.one("Deployment", component)["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == component]
        return container


@functools.cache
def _run(cmd: tuple[str, ...], input_text: str | None) -> Render:
    proc = subprocess.run(list(cmd), input=input_text, capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "HELM_DEBUG": "false"})
    return Render(proc.returncode, proc.stdout, proc.stderr)


def _user_values(mine: bool) -> list[str]:
    return ["-f", str(MY_VALUES)] if mine else []


def render(helm: str, *files: str, values: str | None = None, sets: tuple[str, ...] = (),
           extra: tuple[str, ...] = (), mine: bool = True) -> Render:
    """`helm template` of the chart with my-values.yaml first (unless ``mine=False``), then
    values files (paths or preset names), an inline values document (YAML text, passed on
    stdin) and --set pairs."""
    cmd = [str(helm_binary(helm)), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           *_user_values(mine)]
    for f in files:
        path = PRESETS_DIR / f"{f}.yaml" if f in PRESETS else Path(f)
        cmd += ["-f", str(path)]
    if values is not None:
        cmd += ["-f", "-"]
    for s in sets:
        cmd += ["--set", s]
    return _run(tuple(cmd) + tuple(extra), values)


def notes(helm: str, *files: str, values: str | None = None, mine: bool = True) -> Render:
    """NOTES.txt as `helm install --dry-run=client` prints it (helm template omits NOTES)."""
    cmd = [str(helm_binary(helm)), "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "--dry-run=client", *_user_values(mine)]
    for f in files:
        cmd += ["-f", str(PRESETS_DIR / f"{f}.yaml" if f in PRESETS else f)]
    if values is not None:
        cmd += ["-f", "-"]
    return _run(tuple(cmd), values)
