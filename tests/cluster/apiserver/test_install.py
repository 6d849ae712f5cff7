"""helm install of every preset into a namespace where Pod Security enforces `restricted`:
the API server accepts every object and keeps what was rendered, the controller-manager
creates the ReplicaSets and their pods are admitted. Bad values are refused by the chart
before anything is sent."""

from __future__ import annotations

import pytest

import kubekit
from kubekit import CHART, PRESETS, RELEASE, docs, kept, values_args


@pytest.mark.parametrize("preset", PRESETS)
def test_install_every_preset(kube, helm, namespace, preset):
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace,
                    *values_args(preset))
    assert "STATUS: deployed" in out.stdout
    assert "Warning" not in out.stderr, out.stderr  # e.g. PodSecurity or unknown fields

    sent = docs(kube.helm(helm, "get", "manifest", RELEASE, "-n", namespace).stdout)
    assert {o["kind"] for o in sent} >= {"Deployment", "Service"}
    for obj in sent:
        live = kube.get(obj["kind"].lower(), obj["metadata"]["name"], "-n", namespace)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        diff = kept(obj, live)
        assert not diff, f"{obj['kind']}/{obj['metadata']['name']} not kept as rendered:\n" + \
            "\n".join(diff)

    for component in ("scheduler", "worker"):
        rs = kube.wait_rolled(namespace, component)
        dep = kube.deployment(namespace, component)
        assert rs["spec"]["template"]["spec"]["containers"] == \
            dep["spec"]["template"]["spec"]["containers"]
    pods = kube.get("pods", "-n", namespace)["items"]
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods) == \
        ["scheduler"] + ["worker"] * int(kube.deployment(namespace, "worker")["spec"]["replicas"])
    assert all(p["status"]["phase"] == "Pending" for p in pods)  # no kubelet here
    assert not kube.warnings(namespace)


@pytest.mark.parametrize("preset", PRESETS)
def test_server_dry_run_of_every_preset(kube, helm, namespace, preset):
    """`helm template | kubectl apply --dry-run=server`: full server-side validation and
    admission (Pod Security included) of every object, the helm test pod too. `helm install
    --dry-run=server` is not used: it missed both invalid requests and Pod Security."""
    manifest = kube.template(helm, *values_args(preset), namespace=namespace)
    out = kube.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", "-",
                       input_text=manifest, check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    assert out.stdout.count("(server dry run)") == len(docs(manifest))
    assert kube.leftovers(namespace) == []


# Render-time refusals: (id, values, what the chart says). Each must fail before helm sends
# anything, so the namespace stays empty and no release is recorded.
BAD_VALUES = [
    ("processes-zero", ["worker.processes=0"], "minimum"),
    ("no-bundle-repo", None, "bundles.repo"),
    ("extra-env-shadows", ["worker.extraEnv[0].name=MODELOPS_EXECUTOR_TYPE",
                           "worker.extraEnv[0].value=direct"],
     "worker.extraEnv sets MODELOPS_EXECUTOR_TYPE"),
    ("fresh-venv-direct", ["worker.executor.type=direct", "worker.executor.forceFreshVenv=true"],
     "forceFreshVenv=true needs worker.executor.type=isolated_warm"),
    ("mem-limit-above-pool", ["worker.executor.memLimitPerProcess=4Gi"],
     "memLimitPerProcess=4Gi"),
]


@pytest.mark.parametrize("sets,message", [b[1:] for b in BAD_VALUES],
                         ids=[b[0] for b in BAD_VALUES])
def test_bad_values_fail_before_anything_is_sent(kube, helm, namespace, sets, message):
    args = values_args("prod-warm", *sets) if sets is not None else \
        values_args("prod-warm", mine=False)
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *args, check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert kube.leftovers(namespace) == []  # no object, and no release (helm's Secret)
    kubekit.CASES["refused install"] += 1
