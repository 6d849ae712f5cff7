"""The chart installed from an OCI registry (distribution v3 on 127.0.0.1) against the real
API server, with helm 3 and helm 4: `helm package` + `helm push`, then `helm install
oci://.../modelops-dask --version X` and `helm upgrade` to another of the chart's presets
(`mode=`, chart/presets/ inside the package) from the same reference. What is live is what
the working tree's chart renders for the same values; the image is pinned by digest."""

from __future__ import annotations

import json
import re

from kubekit import CHART, RELEASE, docs, kept, values_args

CHART_NAME = "modelops-dask"
DIGEST = "sha256:" + "ab" * 32   # pods stay Pending here: no image is ever pulled


def chart_version() -> str:
    return re.search(r"^version: (\S+)$", (CHART / "Chart.yaml").read_text(), re.M).group(1)


def worker_template(kube, helm, namespace, *values) -> dict:
    (dep,) = [o for o in docs(kube.template(helm, *values, namespace=namespace))
              if o["kind"] == "Deployment"
              and o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    return dep["spec"]["template"]


def test_install_and_upgrade_from_the_registry(kube, helm, namespace, oci_registry, tmp_path):
    reg, version = oci_registry, chart_version()
    kube.helm(helm, "package", str(CHART), "-d", str(tmp_path))
    pushed = kube.helm(helm, "push", str(tmp_path / f"{CHART_NAME}-{version}.tgz"),
                       f"oci://{reg.host}/charts", "--plain-http")
    assert f"Pushed: {reg.host}/charts/{CHART_NAME}:{version}" in pushed.stdout + pushed.stderr
    ref = f"oci://{reg.host}/charts/{CHART_NAME}"
    image = [f"image.repository={reg.host}/{CHART_NAME}", f"image.digest={DIGEST}"]

    first = values_args(None, "mode=prod-warm", *image)
    out = kube.helm(helm, "install", RELEASE, ref, "--version", version, "--plain-http",
                    "-n", namespace, *first)
    assert "STATUS: deployed" in out.stdout and "Warning" not in out.stderr, out.stderr
    (listed,) = json.loads(kube.helm(helm, "list", "-n", namespace, "-o", "json").stdout)
    assert listed["chart"] == f"{CHART_NAME}-{version}" and listed["revision"] == "1"
    kube.wait_rolled(namespace, "worker")
    live = kube.deployment(namespace, "worker")["spec"]["template"]
    assert not kept(worker_template(kube, helm, namespace, *first), live)
    assert {c["image"] for c in live["spec"]["containers"]} == {f"{reg.host}/{CHART_NAME}@{DIGEST}"}

    # to another preset of the packaged chart, from the registry again
    before = kube.replicasets(namespace, "worker")
    out = kube.helm(helm, "upgrade", RELEASE, ref, "--version", version, "--plain-http",
                    "-n", namespace, "--reuse-values", "--set", "mode=debug-isolated")
    assert "REVISION: 2" in out.stdout and "Warning" not in out.stderr, out.stderr
    rs = kube.wait_rolled(namespace, "worker")
    assert rs["metadata"]["name"] not in {r["metadata"]["name"] for r in before}, "a new rollout"
    live = kube.deployment(namespace, "worker")["spec"]["template"]
    want = worker_template(kube, helm, namespace,
                           *values_args(None, "mode=debug-isolated", *image))
    diff = kept(want, live)
    assert not diff, "worker is not debug-isolated's:\n" + "\n".join(diff)
    env = {e["name"]: e.get("value") for e in live["spec"]["containers"][0].get("env", [])}
    assert env["MODELOPS_EXECUTOR_TYPE"] == "direct", env

    # both came from the registry: the manifest was fetched for the install and the upgrade
    fetched = reg.requests("GET", rf"^/v2/charts/{CHART_NAME}/manifests/{re.escape(version)}$")
    assert len(fetched) >= 2, reg.logs()
    kube.helm(helm, "uninstall", RELEASE, "-n", namespace, "--wait")
    assert kube.leftovers(namespace) == []


def test_a_version_not_pushed_installs_nothing(kube, helm, namespace, oci_registry, tmp_path):
    reg, version = oci_registry, chart_version()
    kube.helm(helm, "package", str(CHART), "-d", str(tmp_path))
    kube.helm(helm, "push", str(tmp_path / f"{CHART_NAME}-{version}.tgz"),
              f"oci://{reg.host}/charts", "--plain-http")
    out = kube.helm(helm, "install", RELEASE, f"oci://{reg.host}/charts/{CHART_NAME}",
                    "--version", "9.9.9", "--plain-http", "-n", namespace, *values_args(),
                    check=False)
    assert out.returncode != 0
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("Error:")]
    assert line.endswith(f"{reg.host}/charts/{CHART_NAME}:9.9.9: not found"), out.stderr
    assert kube.leftovers(namespace) == []
