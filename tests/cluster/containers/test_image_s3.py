"""The full image's worker pods fetch bundles from an S3 endpoint with credentials from a
Kubernetes Secret through the chart (bundles.credentials): the S3 API server (the tests'
pinned `weed`) runs in a container beside the pods on their network, as a self-hosted
endpoint would run in a cluster, reached by a name the pods resolve.

- covers: the rendered envFrom/secretRef and AWS_ENDPOINT_URL working in the real image
  (s3fs from requirements-full.lock); bundle code under isolated_warm not seeing the
  AWS_* variables; a reference not in the bucket failing its task with one line naming the
  repository and the Secret.
- does not: test wrong keys or buckets (tests/runtime/test_bundles_s3.py does, on real
  dask workers).
"""

from __future__ import annotations

import pytest

from modelops_runtime.bundles import pack
from modelops_runtime.client import SimTask, gather_study, submit
from modelops_runtime.errors import BundleNotFound
from podkit import pod_spec, render
from support.bundles import write_bundle
from support.s3 import WEED, S3Server, unavailable, weed_args

MODEL = '''
import os

def simulate(params, seed):
    return {"value": float(params["x"]) * seed, "seed": seed,
            "aws": sorted(k for k in os.environ if k.startswith("AWS_"))}
'''
HOST = "bundles-s3"          # the endpoint's name in the pods (hostAliases, like a Service)
PORTS = {"master.port": 9333, "master.port.grpc": 19333, "volume.port": 8080,
         "volume.port.grpc": 18080, "filer.port": 8888, "filer.port.grpc": 18888,
         "s3.port": 8333, "s3.port.grpc": 18333}


# the full image has numpy (for bokeh) and the test client does not: Dask warns, rightly
@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_worker_pods_fetch_bundles_from_s3_with_a_secret(images, release, tmp_path):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    image = images("full")
    s3 = S3Server(tmp_path / "s3")          # its key pair; the server runs in a container
    repo = "s3://bundles/team-a"
    rel = release(lambda name: render(name, "prod-warm", image, repo, {
        "bundles.credentials": {"secretName": f"{name}-s3", "endpoint": f"http://{HOST}:8333",
                                "region": "us-east-1"},
        "worker.processes": 1,
        "worker.extraEnv": [{"name": "UV_OFFLINE", "value": "1"}]}))
    worker_doc = rel.find("Deployment", "worker")
    container = pod_spec(worker_doc)["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": f"{rel.name}-s3"}}]

    # the Secret the user would create, and the endpoint beside the pods
    rel.add_secret({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": f"{rel.name}-s3"}, "type": "Opaque",
                    "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                                   "AWS_SECRET_ACCESS_KEY": s3.secret_key}})
    config = s3.write_config(mode=0o644)
    ip = rel.run_beside("s3", [
        "--user", "0", "--entrypoint", "/weed", "-v", f"{WEED}:/weed:ro",
        "-v", f"{config}:/s3.json:ro", "--tmpfs", "/data:rw,size=1g",
        image, *weed_args("/data", PORTS, "/s3.json", bind="0.0.0.0", advertise="127.0.0.1")])
    rel.extra_hosts[HOST] = ip
    s3.endpoint = f"http://{ip}:8333"
    s3.wait_ready(on_fail=lambda: rel.container_logs(f"{rel.name}-s3"))
    s3.client().create_bucket(Bucket="bundles")
    ref = pack(write_bundle(tmp_path / "bundle", {"model.py": MODEL, "requirements.txt": ""}),
               repo, environ=s3.env())

    scheduler = rel.play(rel.find("Deployment", "scheduler"))
    rel.wait_ready(scheduler)
    worker = rel.play(worker_doc)
    rel.wait_ready(worker)
    with rel.client(scheduler, 1) as client:
        tasks = [SimTask(bundle=ref, entrypoint="model:simulate", params={"x": 2.0}, seed=s)
                 for s in range(4)]
        study = gather_study(client, submit(client, tasks, study="ctr_s3"), progress=False)
        assert study.ok, "\n".join(f"{f.error_type}: {f.message}" for f in study.failures) \
            + rel.all_logs()
        assert sorted(r.outputs["value"] for r in study.results) == [0.0, 2.0, 4.0, 6.0]
        assert {r.executor for r in study.results} == {"isolated_warm"}
        # bundle code never sees the credentials the worker fetched with
        assert {tuple(r.outputs["aws"]) for r in study.results} == {()}

        unknown = "sha256:" + "d" * 64
        missing = gather_study(client, submit(client, [
            SimTask(bundle=unknown, entrypoint="model:simulate", seed=1)], study="ctr_s3_miss"),
            progress=False)
        [failure] = missing.failures
        assert isinstance(failure.error, BundleNotFound), failure.error
        msg = str(failure.error)
        assert (f"bundle {unknown} is not in repository {repo} (credentials AWS_ACCESS_KEY_ID, "
                f"AWS_SECRET_ACCESS_KEY from Secret {rel.name}-s3; endpoint http://{HOST}:8333 "
                "(AWS_ENDPOINT_URL))") in msg, msg
        assert s3.secret_key not in msg
