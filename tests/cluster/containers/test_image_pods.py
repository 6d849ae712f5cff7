"""The chart's pods from the image as real containers: ``helm template`` of a preset,
``podman kube play`` of its rendered Deployments (podkit.for_podman names the only
adjustments), the chart's hardening checked inside the running containers, a real study
through them, and the chart's ``helm test`` Pod run in its own container against them.
Every pod, container, volume and network is removed afterwards, also when a test fails."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import time

import pytest
from distributed import as_completed

from modelops_runtime.client import SimTask, aggregate, gather_study, submit
from podkit import for_podman, pod_spec, podman, readable, render, worker_processes
from support.bundles import make_bundle
from support.wheels import build_wheel

MODEL = '''
import os

def simulate(params, seed):
    {import_line}
    return {{"value": float(params["x"]) * seed, "seed": seed, "pid": os.getpid(),
            "lib": {lib}}}

def total(outputs):
    return {{"total": sum(o["value"] for o in outputs), "n": len(outputs)}}
'''
WHEELS = "/opt/wheels"     # worker.extraVolumes: the wheels uv installs from, offline
CA_DIR = "/etc/ssl/corp"   # worker.extraVolumes: a proxy's CA bundle, named by SSL_CERT_FILE

# preset → flavour, executor the runtime must report, whether the bundle needs a wheel
CASES = {
    "prod-warm": ("full", "isolated_warm", True),
    "debug-isolated": ("slim", "direct", False),
}


def _quantity(q: str | int) -> float:
    """A Kubernetes quantity ("12800Mi", "1Gi", "500m", "4") as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(m.group(1)) * units[m.group(2)]


def _bundle_repo(tmp_path, needs_wheel: bool) -> tuple[object, str, dict]:
    """→ (repository dir, bundle ref, chart values for the wheels and a CA bundle)."""
    repo = tmp_path / "bundle-repo"
    repo.mkdir()
    files = {"model.py": MODEL.format(import_line="import tinylib" if needs_wheel else "pass",
                                      lib="tinylib.VERSION" if needs_wheel else "None")}
    values: dict = {}
    if needs_wheel:
        files["requirements.txt"] = "tinylib==1.0\n"
        wheels, ca = tmp_path / "wheels", tmp_path / "ca"
        build_wheel(wheels, "tinylib", "1.0", {"tinylib/__init__.py": "VERSION = '1.0'\n"})
        ca.mkdir()
        shutil.copy(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt",
                    ca / "ca.pem")
        readable(wheels)
        readable(ca)
        # how a user behind a TLS-intercepting proxy gives uv (and fsspec) its CA
        values = {
            "worker.extraVolumes": [{"name": "wheels", "hostPath": {"path": str(wheels)}},
                                    {"name": "ca", "hostPath": {"path": str(ca)}}],
            "worker.extraVolumeMounts": [{"name": "wheels", "mountPath": WHEELS, "readOnly": True},
                                         {"name": "ca", "mountPath": CA_DIR, "readOnly": True}],
            "worker.extraEnv": [{"name": k, "value": v} for k, v in {
                "UV_FIND_LINKS": WHEELS, "UV_OFFLINE": "1",
                "SSL_CERT_FILE": f"{CA_DIR}/ca.pem"}.items()],
        }
    ref = make_bundle(tmp_path / "src", repo, files)
    readable(repo)
    return repo, ref, values


def _check_hardening(rel: Release, played) -> None:
    """What the rendered securityContext and resources say, checked on the running
    container (podman's view) and inside it (the kernel's view)."""
    spec = pod_spec(played.doc)
    c = spec["containers"][0]
    pod_sc, sc = spec["securityContext"], c["securityContext"]
    name = played.container()
    info = json.loads(podman("inspect", name).stdout)[0]
    assert info["Config"]["User"] == f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}", info["Config"]["User"]
    assert sc["readOnlyRootFilesystem"] is True and info["HostConfig"]["ReadonlyRootfs"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not info["EffectiveCaps"], info["EffectiveCaps"]
    assert sc["allowPrivilegeEscalation"] is False
    assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"]
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    limits = c["resources"]["limits"]
    assert info["HostConfig"]["Memory"] == _quantity(limits["memory"]), (limits, info["HostConfig"]["Memory"])
    if "cpu" in limits:
        quota, period = info["HostConfig"]["CpuQuota"], info["HostConfig"]["CpuPeriod"]
        assert quota / period == _quantity(limits["cpu"]), (limits, quota, period)
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == str(pod_sc["runAsUser"]), fields["Uid"]
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2", "no seccomp filter on the container"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    # read-only root; every mount the chart gives it writable by uid 10001, the repo read-only
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in c.get("volumeMounts", [])}
    probe = "; ".join([f"(touch {p}/.w && rm {p}/.w && echo {p}=rw || echo {p}=ro)" for p in mounts]
                      + ["(touch /.w && echo /=rw || echo /=ro)"])
    seen = dict(x.split("=") for x in podman("exec", name, "sh", "-c", probe + " 2>/dev/null").stdout.split())
    assert seen == {**{p: "ro" if ro else "rw" for p, ro in mounts.items()}, "/": "ro"}, seen


@pytest.mark.slow
# the full image has numpy (for bokeh) and the test client does not: Dask warns, rightly
@pytest.mark.filterwarnings("ignore:Mismatched versions found")
@pytest.mark.parametrize("preset", list(CASES))
def test_preset_pods_run_a_study_and_pass_helm_test(preset, images, release, tmp_path, capsys):
    flavour, executor, needs_wheel = CASES[preset]
    image = images(flavour)
    repo, ref, values = _bundle_repo(tmp_path, needs_wheel)
    rel = release(lambda name: render(name, preset, image, repo, values))
    worker_doc = rel.find("Deployment", "worker")
    nworkers = worker_processes(worker_doc)

    t0 = time.monotonic()
    scheduler = rel.play(rel.find("Deployment", "scheduler"))
    rel.wait_ready(scheduler)
    worker = rel.play(worker_doc)          # its scheduler Service name → the scheduler pod
    rel.wait_ready(worker)
    with rel.client(scheduler, nworkers) as client:
        tasks = [SimTask(bundle=ref, entrypoint="model:simulate", params={"x": 2.0}, seed=s)
                 for s in range(12)]
        futures = submit(client, tasks, study="ctr_" + preset.replace("-", "_"))
        next(iter(as_completed(futures, timeout=600)))
        first_task_s = time.monotonic() - t0
        study = gather_study(client, futures, progress=False)
        assert study.ok, "\n".join(f"{f.error_type}: {f.message}" for f in study.failures) + rel.all_logs()
        assert sorted(r.outputs["seed"] for r in study.results) == list(range(12))
        assert {r.executor for r in study.results} == {executor}
        assert {r.outputs["lib"] for r in study.results} == {"1.0" if needs_wheel else None}
        assert all(r.worker.startswith("tcp://10.") for r in study.results), "ran in the containers"
        agg = aggregate(client, futures, ref, "model:total").result(timeout=300)
        assert agg.outputs == {"total": 2.0 * sum(range(12)), "n": 12}

    _check_hardening(rel, scheduler)
    _check_hardening(rel, worker)
    if values:   # the CA bundle mounted through worker.extraVolumes is what TLS would use
        out = podman("exec", worker.container(), "python", "-c",
                     "import os, ssl; print(ssl.get_default_verify_paths().openssl_cafile_env, "
                     "len(ssl.create_default_context().get_ca_certs()) > 0, os.environ['SSL_CERT_FILE'])")
        assert out.stdout.split() == ["SSL_CERT_FILE", "True", f"{CA_DIR}/ca.pem"], out.stdout

    # the chart's `helm test` Pod, as rendered, in its own container against the release
    test_doc = rel.find("Pod", "test")
    deadline = pod_spec(test_doc)["activeDeadlineSeconds"]
    tester = rel.play(test_doc)
    code = podman("wait", tester.container(), timeout=deadline + 30).stdout.strip()
    logs = rel.logs(tester, 40)
    assert code == "0", f"helm test failed in its container (exit {code}):\n{logs}"
    info = json.loads(podman("inspect", tester.container()).stdout)[0]
    assert info["HostConfig"]["ReadonlyRootfs"] is True and not info["EffectiveCaps"]
    with capsys.disabled():
        print(f"\n[{preset}/{flavour}] kube play → first finished task: {first_task_s:.1f}s")



def test_podman_gets_the_rendered_spec_with_only_the_named_adjustments(tmp_path):
    """for_podman changes emptyDir names, host ports and hostAliases, nothing else: what
    podman plays is the chart's rendering, not a hand-written copy of it."""
    docs = render("mo000000", "prod-warm", "localhost/modelops-dask:0.1.0", tmp_path)
    for doc in (d for d in docs if d["kind"] in {"Deployment", "Pod"}):
        played = for_podman(doc, {"mo000000-modelops-dask-scheduler": "10.0.0.2"})
        spec, orig = pod_spec(played), pod_spec(doc)
        owner = doc["metadata"]["name"]
        assert spec["hostAliases"] == [{"ip": "10.0.0.2",
                                        "hostnames": ["mo000000-modelops-dask-scheduler"]}]
        for vol, was in zip(spec.get("volumes", []), orig.get("volumes", [])):
            assert vol["name"] == (f"{owner}-{was['name']}" if "emptyDir" in was else was["name"])
        for c in spec["containers"]:
            for p in c.get("ports", []):
                assert p["hostIP"] == "127.0.0.1" and p["hostPort"] > 1024
        # undo the three adjustments: the rest is the rendered object, byte for byte
        undone = json.loads(json.dumps(played))
        s = pod_spec(undone)
        del s["hostAliases"]
        names = {f"{owner}-{v['name']}": v["name"] for v in orig.get("volumes", []) if "emptyDir" in v}
        for v in s.get("volumes", []):
            v["name"] = names.get(v["name"], v["name"])
        for c in s["containers"]:
            for m in c.get("volumeMounts", []):
                m["name"] = names.get(m["name"], m["name"])
            for p in c.get("ports", []):
                del p["hostIP"], p["hostPort"]
        assert undone == doc
