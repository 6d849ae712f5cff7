"""The worker image through a real OCI registry, by digest: both flavours (built once per
session, conftest.py) pushed with podman to the registry on 127.0.0.1, the digest the push
reports equal to the registry's own; the chart rendered with ``image.repository`` and
``image.digest`` and its pods played by podman on an empty store of their own (a fresh
node: no image there before), which pulls ``repository@digest`` from the registry (the
registry served that manifest) and runs a study. A digest the registry does not hold fails the play with one line naming the
reference: no fallback to the tag. The node's store, the pods and the registry's storage are
removed afterwards; the machine's built images are left as they were."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from modelops_runtime.client import SimTask, gather_study, submit
from podkit import (ImagePullFailed, empty_store, pod_spec, podman, podman_env, readable, render,
                    worker_processes)
from support.bundles import make_bundle
from support.paths import MY_VALUES, REPO, TOOLS

REPOSITORY = "modelops-dask"
MODEL = '''
import os

def simulate(params, seed):
    return {"value": float(params["x"]) * seed, "seed": seed, "pid": os.getpid()}
'''
# flavour → the preset its pods play (one of each executor)
CASES = {"full": "prod-warm", "slim": "debug-isolated"}


def exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


@pytest.fixture
def node(oci_registry, images, monkeypatch, tmp_path):
    """``push(flavour)`` → ``<registry>/modelops-dask@sha256:...``: that flavour (built in
    the machine's store) pushed with its tag; from then on this test's podman (and the
    pods it plays) use an empty store of their own, as a fresh node does, and reach the
    registry over plain HTTP through a registries.conf naming this registry only. The
    store, with all it pulled, is removed afterwards (list this fixture before
    ``release``, whose pods live in it)."""
    reg = oci_registry
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", reg.env()["CONTAINERS_REGISTRIES_CONF"])
    with empty_store(tmp_path / "node-store") as store:
        def push(flavour: str) -> str:
            monkeypatch.delenv("CONTAINERS_STORAGE_CONF", raising=False)  # the machine's
            image = images(flavour)
            tag = image.rsplit(":", 1)[1]
            digestfile = tmp_path / f"{flavour}.digest"
            podman("push", "--digestfile", str(digestfile), image,
                   f"{reg.host}/{REPOSITORY}:{tag}", timeout=600)
            digest = digestfile.read_text().strip()
            assert reg.digest(REPOSITORY, tag) == digest, "the registry serves another manifest"
            monkeypatch.setenv("CONTAINERS_STORAGE_CONF", store["CONTAINERS_STORAGE_CONF"])
            ref = f"{reg.host}/{REPOSITORY}@{digest}"
            assert not exists(ref), f"{ref} is in the node's store before any pull"
            return ref

        yield push
        monkeypatch.delenv("CONTAINERS_STORAGE_CONF", raising=False)


def bundle_repo(tmp_path) -> tuple[object, str]:
    repo = tmp_path / "bundle-repo"
    repo.mkdir()
    ref = make_bundle(tmp_path / "src", repo, {"model.py": MODEL})
    readable(repo)
    return repo, ref


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Mismatched versions found")
@pytest.mark.parametrize("flavour", list(CASES))
def test_pods_pull_the_image_by_digest_from_the_registry_and_run_a_study(
        flavour, node, oci_registry, release, tmp_path):
    reg = oci_registry
    ref = node(flavour)
    digest = ref.split("@", 1)[1]
    repo, bundle = bundle_repo(tmp_path)
    rel = release(lambda name: render(name, CASES[flavour], ref, repo))
    for doc in (d for d in rel.docs if d["kind"] in {"Deployment", "Pod"}):
        assert {c["image"] for c in pod_spec(doc)["containers"]} == {ref}, "pinned by digest"

    manifest_gets = rf"^/v2/{REPOSITORY}/manifests/{digest}$"
    assert not reg.requests("GET", manifest_gets)
    scheduler = rel.play(rel.find("Deployment", "scheduler"))
    # podman pulled it: the registry served that manifest, and the reference is now local
    assert reg.requests("GET", manifest_gets), reg.logs()
    assert exists(ref)
    info = podman("inspect", scheduler.container(), "--format", "{{.ImageName}}").stdout.strip()
    assert info == ref, info
    rel.wait_ready(scheduler)
    worker_doc = rel.find("Deployment", "worker")
    worker = rel.play(worker_doc)
    rel.wait_ready(worker)
    with rel.client(scheduler, worker_processes(worker_doc)) as client:
        tasks = [SimTask(bundle=bundle, entrypoint="model:simulate", params={"x": 2.0}, seed=s)
                 for s in range(4)]
        study = gather_study(client, submit(client, tasks, study=f"reg_{flavour}"),
                             progress=False)
        assert study.ok, "\n".join(f"{f.error_type}: {f.message}" for f in study.failures) + \
            rel.all_logs()
        assert sorted(r.outputs["seed"] for r in study.results) == list(range(4))
        assert all(r.worker.startswith("tcp://10.") for r in study.results), "ran in the pods"


def test_a_digest_the_registry_does_not_hold_fails_naming_it(node, oci_registry, release,
                                                              tmp_path):
    """The tag was pushed too: a wrong digest must not quietly become that tag."""
    reg = oci_registry
    ref = node("slim")
    wrong = f"{reg.host}/{REPOSITORY}@sha256:{hashlib.sha256(b'not pushed').hexdigest()}"
    repo, _ = bundle_repo(tmp_path)
    rel = release(lambda name: render(name, "debug-isolated", wrong, repo))
    with pytest.raises(ImagePullFailed) as failed:
        rel.play(rel.find("Deployment", "scheduler"))
    message = str(failed.value)
    assert len(message.splitlines()) == 1, message
    assert f"cannot pull image {wrong}: " in message and "manifest unknown" in message, message
    assert not exists(wrong)
    # nothing was pulled instead: neither by tag nor the pushed digest
    tag_gets = reg.requests("GET", rf"^/v2/{REPOSITORY}/manifests/(?!sha256:)")
    assert not tag_gets and not exists(ref), tag_gets
    assert [c for c in podman("ps", "-a", "--format", "{{.Image}}").stdout.split()
            if c.startswith(reg.host)] == []


def _docs_block() -> str:
    """The bash block of docs/kubernetes.md's "Install from a registry"."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    section = text.split("\n## Install from a registry\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_docs_install_from_a_registry_runs_as_written(images, oci_registry, tmp_path):
    """docs/kubernetes.md's block, as written, in a directory holding what a checkout has and
    the user's my-values.yaml: REGISTRY is the test's registry, helm talks to a control plane
    of the test's own (its pods stay Pending: the install and upgrade are what is checked)."""
    from support.controlplane import ControlPlane, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    reg, block = oci_registry, _docs_block()
    image = images("full")
    assert f" {image} " in block, f"the docs push {image}, the image make image builds"
    (tmp_path / "chart").symlink_to(REPO / "chart")
    shutil.copy(MY_VALUES, tmp_path / "my-values.yaml")
    with ControlPlane(with_kcm=False) as plane:
        env = {**plane.env(), **reg.env(podman_env()), "REGISTRY": reg.host,
               "PATH": f"{TOOLS}:{os.environ['PATH']}"}
        env.pop("CONTAINERS_REGISTRIES_CONF")   # the block's own flags say plain HTTP
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
        assert "\n# modelops-dask chart\n" in proc.stdout, proc.stdout[:500]   # helm show readme
        digest = (tmp_path / "image.digest").read_text().strip()
        assert reg.digest(REPOSITORY, image.rsplit(":", 1)[1]) == digest
        kubectl = [str(TOOLS / "kubectl"), "-n", "default", "get"]
        releases = json.loads(subprocess.run(
            [str(TOOLS / "helm"), "list", "-n", "default", "-o", "json"], env=env,
            capture_output=True, text=True, timeout=60, check=True).stdout)
        assert [(r["name"], r["revision"], r["chart"]) for r in releases] == \
            [("sims", "2", "modelops-dask-0.1.0")]
        dep = json.loads(subprocess.run(
            [*kubectl, "deployment", "sims-modelops-dask-worker", "-o", "json"], env=env,
            capture_output=True, text=True, timeout=60, check=True).stdout)
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["image"] == f"{reg.host}/{REPOSITORY}@{digest}"
        assert {e["name"]: e.get("value") for e in c["env"]}["MODELOPS_EXECUTOR_TYPE"] == "direct"
    assert not [ln for ln in podman("images", "--format", "{{.Repository}}").stdout.split()
                if ln.startswith(reg.host)], "the push left a local name behind"
