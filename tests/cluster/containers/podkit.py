"""The worker image built with podman and the chart's rendered pods played from it.

``podman kube play`` runs the Deployments and the helm test Pod that ``helm template``
renders for a preset: the containers get the rendered command, env, security context
(user, read-only root, capabilities, no privilege escalation, seccomp), volumes and
resource limits from podman itself. Only what podman 4.3 does differently from a kubelet is
adjusted, each named in :func:`for_podman` (and a Secret's form in
:func:`secret_for_podman`); everything else is the rendered spec as is. A server the pods
use (an S3 endpoint) runs beside them on their network (:meth:`Release.run_beside`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from support.cluster import wait_for
from support.ports import PortTaken, address_in_use, free_port, retry_on_eaddrinuse

from support.paths import HELMS, REPO

IMAGE_DIR = REPO / "runtime" / "image"
HELM = HELMS["helm3"]
BUNDLE_REPO_PATH = "/var/lib/modelops/bundle-repo"   # bundles.repo: a path + bundles.volume


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(IMAGE_DIR / "containers.conf"))
    return env


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stderr[-3000:]}")
    return out


@contextlib.contextmanager
def empty_store(root: Path):
    """A containers storage of its own under ``root`` (graph and run root; the machine's
    store, its built images and other tests' containers untouched): with the environment
    this yields (``CONTAINERS_STORAGE_CONF``), podman sees no image, as a fresh node, and
    pulls what a pod needs. Everything in it is removed at the end (never ``podman system
    reset``: that would also remove the machine's networks)."""
    root.mkdir(parents=True)
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "graph"}"\n'
                    f'runroot = "{root / "run"}"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf)}
    try:
        yield env
    finally:
        run = {**podman_env(), **env}
        for args in (["pod", "rm", "-a", "-f"], ["rm", "-a", "-f"], ["rmi", "-a", "-f"],
                     ["volume", "prune", "-f"]):
            subprocess.run(["podman", *args], env=run, capture_output=True, timeout=300)
        left = subprocess.run(["podman", "images", "-q"], env=run, capture_output=True,
                              text=True, timeout=60).stdout.split()
        mounted = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                   if f" {root}/" in ln]
        if not mounted:
            shutil.rmtree(root, ignore_errors=True)
        assert not left and not mounted, f"the store {root} kept images {left}, mounts {mounted}"


def cannot_run() -> str | None:
    """One line saying why this machine cannot build and run the image, or None."""
    if platform.system() != "Linux":
        return f"the image tests need Linux (podman, debootstrap), not {platform.system()}"
    if shutil.which("podman") is None:
        return "podman is not installed (ci/install-tools.sh .tools/bin podman installs it)"
    if os.geteuid() != 0:
        return "the image tests need root (debootstrap, podman with runc and cgroupfs)"
    return None


def build(flavour: str) -> tuple[str, float]:
    """Build ``flavour`` with runtime/image/build.sh; → (tag, seconds). Skips with the
    script's one line when this machine cannot build (exit 3)."""
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    out = subprocess.run(["bash", str(IMAGE_DIR / "build.sh"), flavour], env=podman_env(),
                         capture_output=True, text=True, timeout=1800)
    if out.returncode == 3:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, f"building the {flavour} image failed:\n{out.stderr[-5000:]}"
    return out.stdout.strip().splitlines()[-1], time.monotonic() - start


# ---- the chart rendered and played ------------------------------------------------------

def readable(path) -> None:
    """Make ``path`` (a tree) readable by the containers' uid 10001."""
    for root, dirs, names in os.walk(path):
        os.chmod(root, 0o755)
        for n in names:
            os.chmod(os.path.join(root, n), 0o644)


def image_values(image: str) -> list[str]:
    """``--set`` args for an image reference: ``repository:tag`` sets image.repository and
    image.tag, ``repository@sha256:...`` sets image.repository and image.digest."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return ["--set", f"image.repository={repo}", "--set", f"image.digest={digest}"]
    repo, tag = image.rsplit(":", 1)
    return ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}"]


def render(release: str, preset: str, image: str, bundle_repo: Path | str,
           values: dict[str, object] | None = None) -> list[dict]:
    """``helm template`` of ``preset`` with the image (a tag or a digest reference), a
    hostPath bundle volume (or, with a URL ``bundle_repo`` such as s3://..., that URL and
    no volume) and ``values`` (dotted key → value, as ``--set-json``)."""
    args = [str(HELM), "template", release, str(REPO / "chart"),
            "-f", str(REPO / "values-examples" / f"{preset}.yaml"), *image_values(image)]
    if isinstance(bundle_repo, str):
        args += ["--set", f"bundles.repo={bundle_repo}"]
    else:
        args += ["--set", f"bundles.repo={BUNDLE_REPO_PATH}", "--set-json",
                 "bundles.volume=" + json.dumps({"hostPath": {"path": str(bundle_repo)}})]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def worker_processes(doc: dict) -> int:
    """The worker processes one pod of the rendered worker Deployment ``doc`` starts (its
    ``--nworkers``)."""
    args = pod_spec(doc)["containers"][0]["args"]
    return int(args[args.index("--nworkers") + 1])


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]


def for_podman(doc: dict, hosts: dict[str, str]) -> dict:
    """The rendered ``doc`` as podman 4.3's ``kube play`` must be given it to behave like a
    kubelet. Three differences, nothing else touched:

    - an ``emptyDir`` becomes a host-wide named volume called by the volume's name (``tmp``):
      prefixed with the object's name, so no two pods or releases share one;
    - a ``containerPort`` without ``hostPort`` is published on 0.0.0.0 at the same port:
      published on 127.0.0.1 at a free port instead (Kubernetes publishes nothing);
    - no cluster DNS: ``hostAliases`` give the Services' names (``hosts``: name → pod IP).
    """
    doc = copy.deepcopy(doc)
    spec = pod_spec(doc)
    owner = doc["metadata"]["name"]
    renamed = {}
    for vol in spec.get("volumes", []):
        if "emptyDir" in vol:
            renamed[vol["name"]] = f"{owner}-{vol['name']}"
            vol["name"] = renamed[vol["name"]]
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            m["name"] = renamed.get(m["name"], m["name"])
        for p in c.get("ports", []):
            p.setdefault("hostIP", "127.0.0.1")
            p.setdefault("hostPort", free_port())
    if hosts:
        spec["hostAliases"] = [{"ip": ip, "hostnames": [name]} for name, ip in hosts.items()]
    return doc


class ImagePullFailed(AssertionError):
    """``podman kube play`` could not pull a pod's image: the message is one line naming
    the image reference and the registry's answer (what a kubelet reports as ErrImagePull)."""


def pull_failure(stderr: str) -> str | None:
    """The one line of podman's output saying which image reference it could not pull and
    why, or None when the failure was not a pull."""
    for line in stderr.splitlines():
        m = re.match(r"Error: (?:.*?: )?initializing source docker://(\S+?): (.*)$", line)
        if m:
            return f"cannot pull image {m.group(1)}: {m.group(2)}"
    return None


@dataclass
class Played:
    """One pod podman played from a rendered object."""

    name: str                       # the pod's name
    doc: dict                       # the object as played
    file: Path

    def container(self, index: int = 0) -> str:
        return f"{self.name}-{pod_spec(self.doc)['containers'][index]['name']}"


def secret_for_podman(doc: dict) -> bytes:
    """A Kubernetes Secret as podman 4.3 keeps one for ``envFrom: secretRef``: its ``data``
    (values base64, as in the object) as JSON. (``podman kube play`` of a Secret stores the
    YAML itself, which 4.3's secretRef lookup then cannot read.)"""
    import base64

    data = dict(doc.get("data") or {})
    for key, value in (doc.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return json.dumps(data).encode()


@dataclass
class Release:
    """A preset's rendered objects played as podman pods on a network of their own."""

    name: str
    workdir: Path
    docs: list[dict]
    played: list[Played] = field(default_factory=list)
    network: str = ""
    # names the pods resolve besides the Services' (a server the test runs beside them)
    extra_hosts: dict[str, str] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)   # run by run_beside()
    secrets: list[str] = field(default_factory=list)      # made by add_secret()

    @classmethod
    def new(cls, workdir: Path, docs_of) -> Release:
        name = "mo" + uuid.uuid4().hex[:6]
        return cls(name=name, workdir=workdir, docs=docs_of(name))

    def find(self, kind: str, component: str) -> dict:
        for d in self.docs:
            labels = d["metadata"].get("labels", {})
            if d["kind"] == kind and labels.get("app.kubernetes.io/component") == component:
                return d
        raise AssertionError(f"the chart rendered no {kind} for {component}: "
                             f"{[(d['kind'], d['metadata']['name']) for d in self.docs]}")

    def service_hosts(self) -> dict[str, str]:
        """Each rendered Service's name → the IP of a played pod its selector matches."""
        hosts = {}
        for svc in (d for d in self.docs if d["kind"] == "Service"):
            sel = svc["spec"]["selector"]
            for p in self.played:
                labels = (p.doc["spec"]["template"]["metadata"]["labels"]
                          if p.doc["kind"] == "Deployment" else p.doc["metadata"]["labels"])
                if all(labels.get(k) == v for k, v in sel.items()):
                    hosts[svc["metadata"]["name"]] = self.ip(p)
        return hosts

    def ensure_network(self) -> str:
        if not self.network:
            self.network = f"{self.name}-net"
            podman("network", "create", self.network)
        return self.network

    def add_secret(self, doc: dict) -> str:
        """The Kubernetes Secret ``doc`` in podman's store (its name must start with the
        release's name, so that down() and leftovers() find it)."""
        name = doc["metadata"]["name"]
        assert name.startswith(self.name), name
        path = self.workdir / f"secret-{name}.json"
        path.write_bytes(secret_for_podman(doc))
        path.chmod(0o600)
        self.secrets.append(name)
        podman("secret", "create", name, str(path))
        path.unlink()
        return name

    def run_beside(self, suffix: str, args: list[str]) -> str:
        """``podman run -d`` a container named ``<release>-<suffix>`` on the release's
        network (a server its pods use); → its IP address."""
        name = f"{self.name}-{suffix}"
        self.containers.append(name)
        podman("run", "-d", "--name", name, "--network", self.ensure_network(), *args)
        out = podman("inspect", name, "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        return out.stdout.strip()

    def play(self, doc: dict) -> Played:
        self.ensure_network()
        hosts = {**self.extra_hosts, **self.service_hosts()}

        def play_once() -> Played:  # published ports are picked anew on each attempt
            rewritten = for_podman(doc, hosts)
            path = self.workdir / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(rewritten, sort_keys=False))
            out = podman("kube", "play", "--network", self.network, str(path), check=False)
            if out.returncode != 0 and address_in_use(out.stderr):
                podman("kube", "down", str(path), check=False, timeout=120)
                raise PortTaken(out.stderr.strip()[-500:])
            pod = doc["metadata"]["name"] + ("-pod-0" if doc["kind"] == "Deployment" else "")
            played = Played(name=pod, doc=rewritten, file=path)
            self.played.append(played)  # down() removes it, also after a failed play
            if out.returncode != 0:
                refused = pull_failure(out.stderr)
                if refused:
                    raise ImagePullFailed(f"pod {pod}: {refused}")
                raise AssertionError(f"podman kube play {path} failed ({out.returncode}):\n"
                                     f"{out.stderr[-3000:]}")
            return played

        return retry_on_eaddrinuse(play_once)

    def ip(self, p: Played) -> str:
        out = podman("inspect", p.container(), "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        return out.stdout.strip()

    def logs(self, p: Played, lines: int = 80) -> str:
        out = podman("logs", "--tail", str(lines), p.container(), check=False)
        return f"--- {p.container()} ---\n{out.stdout}{out.stderr}"

    def container_logs(self, name: str, lines: int = 40) -> str:
        out = podman("logs", "--tail", str(lines), name, check=False)
        return f"--- {name} ---\n{out.stdout}{out.stderr}"

    def all_logs(self) -> str:
        return "\n".join(self.logs(p) for p in self.played)

    def wait_ready(self, p: Played, timeout: float = 180) -> None:
        """The rendered readinessProbe (httpGet) answering 200, as a kubelet would check."""
        c = pod_spec(p.doc)["containers"][0]
        probe = c["readinessProbe"]["httpGet"]
        port = probe["port"]
        if isinstance(port, str):
            port = next(x["containerPort"] for x in c["ports"] if x.get("name") == port)
        url = f"http://{self.ip(p)}:{port}{probe['path']}"

        def ready():
            state = podman("inspect", p.container(), "--format", "{{.State.Status}}").stdout.strip()
            if state not in {"running", "created", "configured"}:
                raise AssertionError(f"{p.container()} is {state}:\n{self.logs(p)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=3) as r:
                    return r.status == 200
            return False
        wait_for(ready, timeout, f"{url} (readinessProbe of {p.container()}) to answer 200",
                 interval=0.5, on_fail=lambda: self.logs(p))

    @contextlib.contextmanager
    def client(self, scheduler: Played, workers: int):
        """A Dask client of the ``scheduler`` pod once ``workers`` worker processes are
        connected to it (bounded wait; the pods' logs on failure)."""
        from distributed import Client

        address = f"tcp://{self.ip(scheduler)}:8786"
        with Client(address, timeout=60) as client:
            wait_for(lambda: len(client.scheduler_info()["workers"]) == workers, 240,
                     f"{workers} worker processes at {address}", interval=0.5,
                     on_fail=self.all_logs)
            yield client

    def down(self) -> list[str]:
        """Remove every pod, container, volume and the network; → what was still left."""
        for p in reversed(self.played):
            podman("kube", "down", str(p.file), check=False, timeout=120)
        for p in self.played:
            podman("pod", "rm", "-f", "-t", "5", p.name, check=False)
        for c in self.containers:
            podman("rm", "-f", "-t", "5", c, check=False)
        for secret in self.secrets:
            podman("secret", "rm", secret, check=False)
        vols = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        for v in vols:
            if v.startswith(self.name + "-"):
                podman("volume", "rm", "-f", v, check=False)
        if self.network:
            podman("network", "rm", "-f", self.network, check=False)
        return leftovers(self.name)


def leftovers(prefix: str) -> list[str]:
    """Pods, containers, volumes, networks and secrets whose name starts with ``prefix``."""
    found = []
    for what, args in (("pod", ["pod", "ps", "-a"]), ("container", ["ps", "-a"]),
                       ("volume", ["volume", "ls"]), ("network", ["network", "ls"]),
                       ("secret", ["secret", "ls"])):
        names = podman(*args, "--format", "{{.Name}}" if what != "container" else "{{.Names}}",
                       check=False).stdout.split()
        found += [f"{what} {n}" for n in names if n.startswith(prefix)]
    return found
