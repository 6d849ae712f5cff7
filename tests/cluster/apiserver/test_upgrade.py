"""Switching modes with helm upgrade, and helm rollback, against the real API server: the
worker pod template changes exactly as the preset says (a new ReplicaSet each time), the
scheduler and every selector never change; a failed upgrade is rolled back as a whole with
--atomic (helm 3) / --rollback-on-failure (helm 4), as NOTES and the README say."""

from __future__ import annotations

import json

import pytest

from kubekit import CHART, PRESETS, RELEASE, docs, kept, values_args

START = "prod-warm"
# prod-warm → every other preset → prod-warm
SWITCHES = [p for p in PRESETS if p != START] + [START]


def rendered_worker(kube, helm, namespace, preset, *sets) -> dict:
    (dep,) = [o for o in docs(kube.template(helm, *values_args(preset, *sets),
                                            namespace=namespace))
              if o["kind"] == "Deployment"
              and o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    return dep["spec"]["template"]


def assert_worker_is(kube, namespace, want: dict, preset: str) -> None:
    live = kube.deployment(namespace, "worker")["spec"]["template"]
    diff = kept(want, live)
    assert not diff, f"worker pod template is not {preset}'s:\n" + "\n".join(diff)
    (lc,), (wc,) = live["spec"]["containers"], want["spec"]["containers"]
    assert lc["args"] == wc["args"]
    assert [(e["name"], e.get("value")) for e in lc.get("env", [])] == \
        [(e["name"], e.get("value")) for e in wc.get("env", [])]
    assert kept(wc["resources"], lc["resources"]) == [] and \
        set(lc["resources"]) == set(wc["resources"])


def unchanging(kube, namespace) -> dict:
    """What no mode switch may touch: the scheduler Deployment (spec and generation) and
    every selector."""
    sched = kube.deployment(namespace, "scheduler")
    svc = kube.get("service", f"{RELEASE}-modelops-dask-scheduler", "-n", namespace)
    return {"scheduler spec": sched["spec"], "scheduler generation": sched["metadata"]["generation"],
            "worker selector": kube.deployment(namespace, "worker")["spec"]["selector"],
            "service selector": svc["spec"]["selector"]}


# The two ways to switch a mode the README and NOTES give: the preset file after your own
# values (what is rendered: -f my-values.yaml -f values-examples/<preset>.yaml), or the
# chart's own preset by name (rendered: -f my-values.yaml --set mode=<preset>).
WAYS = {
    "preset-file": (lambda p: values_args(p), lambda p: values_args(p)),
    "set-mode": (lambda p: ["--reuse-values", "--set", f"mode={p}"],
                 lambda p: values_args(None, f"mode={p}")),
}


@pytest.mark.parametrize("way", WAYS)
def test_upgrade_through_every_preset_and_rollback(kube, helm, namespace, way):
    upgrade_args, rendered_as = WAYS[way]

    def rendered(preset):
        (dep,) = [o for o in docs(kube.template(helm, *rendered_as(preset), namespace=namespace))
                  if o["kind"] == "Deployment"
                  and o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
        return dep["spec"]["template"]

    kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *rendered_as(START))
    first_rs = kube.wait_rolled(namespace, "worker")["metadata"]["name"]
    kube.wait_rolled(namespace, "scheduler")
    fixed = unchanging(kube, namespace)
    templates = {START: rendered(START)}
    seen_rs = [first_rs]
    revisions = {1: START}

    for revision, preset in enumerate(SWITCHES, start=2):
        out = kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
                        *upgrade_args(preset))
        assert f"REVISION: {revision}" in out.stdout and "Warning" not in out.stderr, out.stderr
        assert "WARNING" not in out.stdout, out.stdout  # NOTES: the mode is the preset's
        revisions[revision] = preset
        templates.setdefault(preset, rendered(preset))
        assert_worker_is(kube, namespace, templates[preset], preset)
        rs = kube.wait_rolled(namespace, "worker")["metadata"]["name"]
        if preset == START:  # the same template again: its first ReplicaSet is scaled back up
            assert rs == first_rs
        else:
            assert rs not in seen_rs, f"switching to {preset} made no new ReplicaSet"
            seen_rs.append(rs)
        assert unchanging(kube, namespace) == fixed, f"switching to {preset} changed them"
    assert len(kube.replicasets(namespace, "worker")) == len(PRESETS)

    # helm rollback: to the previous revision, then to the first switch
    previous = revisions[len(revisions) - 1]
    kube.helm(helm, "rollback", RELEASE, "-n", namespace)
    assert_worker_is(kube, namespace, templates[previous], previous)
    kube.helm(helm, "rollback", RELEASE, "2", "-n", namespace)
    assert_worker_is(kube, namespace, templates[revisions[2]], revisions[2])
    kube.wait_rolled(namespace, "worker")
    assert unchanging(kube, namespace) == fixed
    history = kube.helm(helm, "history", RELEASE, "-n", namespace).stdout
    assert history.count("Rollback to") == 2, history
    assert not kube.warnings(namespace)


# Valid for the chart (it cannot check a passthrough affinity), refused by the API server:
# the scheduler Deployment is invalid, the worker Deployment would already be switched.
SERVER_REFUSES = ["scheduler.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                  ".nodeSelectorTerms[0].matchExpressions[0].key=zone",
                  "scheduler.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                  ".nodeSelectorTerms[0].matchExpressions[0].operator=Near"]
SAFE_FLAG = {"helm3": "--atomic", "helm4": "--rollback-on-failure"}


def test_failed_upgrade_is_rolled_back_as_a_whole(kube, helm, namespace):
    kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *values_args(START))
    kube.wait_rolled(namespace, "worker")
    before = rendered_worker(kube, helm, namespace, START)

    # the safe way (NOTES and README): the failed upgrade is undone, the mode is the old one.
    # Without a kubelet the pods never become ready, so the rollback's own wait (implied by
    # both flags) runs out and helm says so; what matters, the objects, are back.
    out = kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
                    *values_args("debug-isolated", *SERVER_REFUSES), SAFE_FLAG[helm],
                    "--timeout", "15s", check=False)
    assert out.returncode != 0
    assert 'Invalid value: "Near"' in out.stderr, out.stderr
    assert "an error occurred while rolling back the release" in out.stderr, out.stderr
    assert_worker_is(kube, namespace, before, START)
    history = kube.helm(helm, "history", RELEASE, "-n", namespace, "-o", "json").stdout
    assert [r["revision"] for r in json.loads(history)] == [1, 2, 3]  # install, failed, rollback

    # without it: helm says failed while the worker Deployment already runs the new mode
    out = kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace,
                    *values_args("debug-isolated", *SERVER_REFUSES), check=False)
    assert out.returncode != 0 and 'Invalid value: "Near"' in out.stderr, out.stderr
    half = rendered_worker(kube, helm, namespace, "debug-isolated")
    assert_worker_is(kube, namespace, half, "debug-isolated")


@pytest.mark.parametrize("preset", ["debug-isolated"])
def test_notes_upgrade_lines_use_the_safe_flag(kube, helm, namespace, preset):
    out = kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, *values_args(preset))
    lines = [line for line in out.stdout.splitlines() if line.strip().startswith("helm upgrade")]
    assert lines and all(SAFE_FLAG[helm] in line for line in lines), lines
