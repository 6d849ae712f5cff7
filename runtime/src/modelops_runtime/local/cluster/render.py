"""The chart as the pods get it: find helm and the chart, ``helm template``, and parse the
rendered scheduler and worker Deployments into a typed :class:`RenderedCluster`.

The local mode (``plan.py``, ``supervise.py``) starts what this module returns; nothing here knows about
local processes. The ``get_opt``/``set_opt``/``drop_opt`` helpers read and edit the rendered
``dask`` argv (both ``--opt value`` and ``--opt=value``, as click accepts them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ...errors import ChartRenderError, LocalModeError
from .argv import get_opt

HELM_ENV = "MODELOPS_HELM"   # CLI setting (which helm binary), not a runtime setting
DEFAULT_RELEASE = "modelops-dask"


# ---------------------------------------------------------------------------------
# helm: find the chart and the binary, render
# ---------------------------------------------------------------------------------

def find_chart(start: Path | None = None) -> Path:
    """The repository's ``chart/``: searched upwards from ``start``; without ``start``, from
    the current directory and then next to this package's source tree (editable installs)."""
    here = Path.cwd() if start is None else Path(start)
    candidates = [p / "chart" for p in (here, *here.resolve().parents)]
    if start is None:
        candidates.append(Path(__file__).resolve().parents[4] / "chart")
    for cand in candidates:
        if (cand / "Chart.yaml").is_file():
            return cand
    raise LocalModeError(
        f"no Helm chart found: looked for chart/Chart.yaml in {here} and its parents; "
        "run from the modelops-dask repository or pass --chart PATH")


def find_helm(chart: Path) -> str:
    """$MODELOPS_HELM, else the repository's pinned ``.tools/bin/helm``, else ``helm`` on PATH."""
    override = os.environ.get(HELM_ENV)
    if override:
        found = shutil.which(override)
        if not found:
            raise LocalModeError(
                f"{HELM_ENV}={override!r} is not an executable; point it at a helm 3 or 4 "
                "binary or unset it")
        return found
    pinned = Path(chart).resolve().parent / ".tools" / "bin" / "helm"
    if os.access(pinned, os.X_OK):
        return str(pinned)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    raise LocalModeError(
        "helm not found: the local mode renders the chart with helm. Run `make tools` "
        f"(installs the pinned helm into .tools/bin), put helm on PATH, or set {HELM_ENV}")


LOCAL_BUNDLES = "bundles: {repo: 'file:///var/lib/modelops/bundle-repo'}\n"
KEDA_SCALED_OBJECT = "keda.sh/v1alpha1/ScaledObject"


def render(chart: Path, values: Sequence[Path | str] = (), sets: Sequence[str] = (),
           release: str = DEFAULT_RELEASE) -> list[dict]:
    """``helm template`` → the rendered manifests. A values file the chart's schema rejects
    raises :class:`ChartRenderError` carrying helm's own message."""
    for v in values:
        if not Path(v).is_file():
            raise LocalModeError(
                f"values file {v} does not exist; pass an existing file with -f "
                "(the presets are in values-examples/)")
    # The chart requires bundles.repo. The local mode points MODELOPS_BUNDLE_REPO at
    # <state>/bundle-repo itself, so a stand-in goes first; values files that set bundles
    # still win and are checked as on the cluster.
    # The local mode serves no cluster: a release with worker.autoscaling renders as with
    # KEDA installed, and runs a fixed count of pods (parse_rendered).
    argv = [find_helm(chart), "template", release, str(chart), "-f", "-",
            "--api-versions", KEDA_SCALED_OBJECT]
    for v in values:
        argv += ["-f", str(v)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          input=LOCAL_BUNDLES)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())
        raise ChartRenderError(
            f"the chart rejected these values (helm template exited {proc.returncode}); "
            f"nothing was started. Fix the values and try again. helm said:\n{output}",
            helm_output=output)
    return [d for d in yaml.safe_load_all(proc.stdout) if isinstance(d, dict)]


# ---------------------------------------------------------------------------------
# the rendered containers (typed view of what the chart promises)
# ---------------------------------------------------------------------------------

class Container(BaseModel):
    """One rendered container: what a pod would run."""

    model_config = ConfigDict(frozen=True)

    command: list[str]
    args: list[str]
    env: dict[str, str]
    field_env: dict[str, str] = Field(
        default_factory=dict, description="env from the downward API: name → fieldPath")
    mounts: dict[str, str] = Field(
        default_factory=dict, description="volume mount path → volume name")
    empty_dirs: list[str] = Field(
        default_factory=list, description="mounted volumes that are emptyDirs in the pod")


class RenderedCluster(BaseModel):
    """The scheduler and worker containers of one ``helm template``."""

    model_config = ConfigDict(frozen=True)

    scheduler: Container
    worker: Container
    replicas: int = Field(ge=0)
    autoscaled: bool = Field(
        default=False, description="worker.autoscaling was on: replicas is max(1, minReplicas)")

    @property
    def fixed_layout(self) -> tuple[str, ...]:
        """--set pairs that pin an autoscaled release to this count of pods, so that runs
        which change the layout (diagnose's steps) render as a fixed release would."""
        if not self.autoscaled:
            return ()
        return ("worker.autoscaling.enabled=false", f"worker.replicas={self.replicas}")

    @property
    def nworkers(self) -> int:
        """Dask worker processes per worker pod (``--nworkers``)."""
        raw = get_opt(self.worker.args, "--nworkers") or "1"
        try:
            n = int(raw)
        except ValueError:
            raise LocalModeError(
                f"the rendered worker has --nworkers {raw!r}; the local mode needs a fixed "
                "number of processes per pod (an integer >= 1) in the values") from None
        if n < 1:
            raise LocalModeError(f"the rendered worker has --nworkers {n}; expected >= 1")
        return n

    @property
    def nthreads(self) -> int:
        return int(get_opt(self.worker.args, "--nthreads") or 1)


def _component(doc: dict) -> str | None:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/component")


def _container(doc: dict, name: str) -> Container:
    spec = doc["spec"]["template"]["spec"]
    for c in spec.get("containers", []):
        if c.get("name") == name:
            break
    else:
        raise LocalModeError(
            f"the rendered {name} Deployment has no container named {name!r}; the chart "
            "breaks the local-mode render contract (see chart/ README)")
    env, field_env = {}, {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = "" if item["value"] is None else str(item["value"])
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            field_env[item["name"]] = item["valueFrom"]["fieldRef"].get("fieldPath", "")
        else:
            raise LocalModeError(
                f"the {name} container's env {item['name']} comes from "
                f"{sorted((item.get('valueFrom') or {}))}, which the local mode cannot "
                "resolve; the chart must render plain `value:` strings for local use")
    mounts = {m["mountPath"].rstrip("/") or "/": m["name"] for m in c.get("volumeMounts") or []}
    empty = {v.get("name") for v in spec.get("volumes") or [] if "emptyDir" in v}
    return Container(command=[str(x) for x in c.get("command") or []],
                     args=[str(x) for x in c.get("args") or []],
                     env=env, field_env=field_env, mounts=mounts,
                     empty_dirs=sorted(empty & set(mounts.values())))


def parse_rendered(docs: Sequence[dict]) -> RenderedCluster:
    """Pick the scheduler and worker Deployments out of the rendered manifests."""
    deployments = {}
    for doc in docs:
        if doc.get("kind") == "Deployment" and _component(doc) in ("scheduler", "worker"):
            deployments[_component(doc)] = doc
    missing = sorted({"scheduler", "worker"} - set(deployments))
    if missing:
        raise LocalModeError(
            f"the rendered chart has no {' and no '.join(missing)} Deployment (label "
            "app.kubernetes.io/component); is this the modelops-dask chart?")
    worker = deployments["worker"]
    replicas = worker["spec"].get("replicas")
    # worker.autoscaling: no replicas in the Deployment, a KEDA ScaledObject scales it. The
    # local mode has no autoscaler and runs the pods the release keeps at least, one at
    # least (a local study always has work for a pod).
    name = (worker.get("metadata") or {}).get("name")
    scaled = [d for d in docs if d.get("kind") == "ScaledObject"
              and ((d.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name]
    if replicas is None and scaled:
        replicas = max(1, int(scaled[0]["spec"].get("minReplicaCount") or 0))
    return RenderedCluster(scheduler=_container(deployments["scheduler"], "scheduler"),
                           worker=_container(worker, "worker"),
                           replicas=1 if replicas is None else int(replicas),
                           autoscaled=bool(scaled))


def render_cluster(values: Sequence[Path | str] = (), sets: Sequence[str] = (), *,
                   chart: Path | None = None, release: str = DEFAULT_RELEASE) -> RenderedCluster:
    chart = find_chart() if chart is None else Path(chart)
    return parse_rendered(render(chart, values, sets, release))
