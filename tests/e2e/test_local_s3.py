"""The local mode and the results store with an S3 repository (support/s3.py's server):
wrong credentials or a missing bucket are one line before anything starts, naming the store
and where the credentials came from; a values file's bundles.credentials is planned the
local way (this shell's variables, the Secret named as not read); a study killed halfway
resumes from its store in the bucket.

- see also: test_readme_s3.py (the whole path working: pack, run, store, resume, read back).
"""

from __future__ import annotations

import json
import os
import signal
import time

import yaml

from e2e_support import preset
from modelops_runtime.client.store import ResultsStore
from modelops_runtime.local.cluster.launch import plan
from modelops_runtime.local.cluster.render import render_cluster
from support.bundles import write_bundle

MODEL = "def simulate(params, seed):\n    return {'value': seed}\n"


def _study(tmp_path) -> str:
    bundle = write_bundle(tmp_path / "b", {"model.py": MODEL, "requirements.txt": ""})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s3", "bundle": str(bundle),
                                    "entrypoint": "model:simulate", "seeds_per_set": 3}))
    return str(path)


def _env(local_env, s3_server, **override) -> dict[str, str]:
    env = {k: v for k, v in local_env().items() if not k.startswith("AWS_")}
    return {**env, **s3_server.env(**override)}


def test_a_results_store_with_a_wrong_key_is_one_line(s3_server, local_cli, local_env,
                                                      tmp_path):
    bucket = s3_server.bucket("results")
    url = f"s3://{bucket}/studies/s3"
    wrong = "wrong-secret-key-for-the-results-0000"
    bad = _env(local_env, s3_server, secret_key=wrong)
    shown = local_cli.run([url], bad, command="results")
    assert shown.popen.returncode == 1, shown.output
    assert shown.stderr.strip() == (
        f"error: results store {url} cannot be read: the secret key does not match the access "
        "key (wrong AWS_SECRET_ACCESS_KEY) (credentials AWS_ACCESS_KEY_ID, "
        f"AWS_SECRET_ACCESS_KEY from the environment; endpoint {s3_server.endpoint} "
        "(AWS_ENDPOINT_URL)). Check the URL, the bucket and the credentials")

    # a study with it: refused before helm renders anything, nothing written to the bucket
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", _study(tmp_path),
                         "--state-dir", tmp_path / "state", "--results-store", url], bad)
    assert run.popen.returncode == 1, run.output
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: results store {url} cannot be read: the secret key "), line
    assert wrong not in run.output and s3_server.secret_key not in run.output
    assert "local mode: helm template" not in run.stdout
    assert s3_server.keys(bucket) == []

    # a bucket that does not exist: the same line with its cause
    missing = "s3://no-such-results-bucket/studies/s3"
    shown = local_cli.run([missing], _env(local_env, s3_server), command="results")
    assert shown.popen.returncode == 1, shown.output
    assert shown.stderr.strip().startswith(
        f"error: results store {missing} cannot be read: the bucket does not exist "
        "(credentials AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from the environment;"), \
        shown.output


def test_a_url_repository_in_the_values_is_where_local_packs_and_fetches(tmp_path,
                                                                          monkeypatch):
    """bundles.repo: s3://... is kept (not replaced by <state>/bundle-repo); the values'
    endpoint and region reach the workers and the client-side pack; the Secret is named as
    not read locally and the workers' credentials source says so."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-shell")
    values = tmp_path / "s3.yaml"
    values.write_text(yaml.safe_dump({"bundles": {"repo": "s3://bkt/bundles", "credentials": {
        "secretName": "s3-creds", "endpoint": "http://127.0.0.1:9", "region": "eu-west-1"}}}))
    launch = plan(render_cluster([preset("prod-warm").file, values]), tmp_path / "state")
    assert launch.bundle_repo == "s3://bkt/bundles"
    assert launch.config.bundle_repo == "s3://bkt/bundles"
    env = launch.workers[0].env
    assert env["MODELOPS_BUNDLE_REPO"] == "s3://bkt/bundles"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_ACCESS_KEY_ID"] == "from-the-shell"          # inherited, as documented
    assert env["MODELOPS_BUNDLE_CREDENTIALS"] == "this shell's environment (local mode)"
    assert launch.bundle_env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert launch.bundle_env["AWS_ACCESS_KEY_ID"] == "from-the-shell"
    assert ("the workers' Secret s3-creds (bundles.credentials.secretName) is not read "
            "locally: the local workers use this shell's AWS_* variables for "
            "s3://bkt/bundles") in launch.notices
    # a path repository stays the local mode's own
    local = plan(render_cluster([preset("prod-warm").file]), tmp_path / "state2")
    assert local.bundle_repo == (tmp_path / "state2").resolve() / "bundle-repo"
    assert local.bundle_env == {} and os.environ.get("MODELOPS_BUNDLE_REPO") is None


SLOW_MODEL = '''
import time

def simulate(params, seed):
    time.sleep(0.002)          # slow enough that a kill lands mid-study
    return {"value": params["x"] * seed, "seed": seed}
'''
SETS, SEEDS = 2, 500
DIRECT = ["--set", "worker.executor.type=direct", "--set", "worker.processes=2",
          "--set", "worker.threads=1"]


def _stored_runs(s3_server, bucket: str, key: str) -> int:
    try:
        body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception:  # noqa: BLE001 - not written yet
        return 0
    return sum(p["rows"] for p in json.loads(body)["parts"])


def test_a_study_killed_halfway_resumes_in_s3(s3_server, local_cli, local_env, tmp_path,
                                              monkeypatch):
    """Bundles and results in one bucket: the client and its cluster SIGKILLed halfway,
    the same command again resumes from the bucket's store and ends with every (set, seed)
    once; `results` reads it back."""
    bucket = s3_server.bucket("resume")
    values = tmp_path / "s3.yaml"
    values.write_text(yaml.safe_dump({"bundles": {"repo": f"s3://{bucket}/bundles"}}))
    bundle = write_bundle(tmp_path / "slow", {"model.py": SLOW_MODEL, "requirements.txt": ""})
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "slow", "bundle": str(bundle),
                                     "entrypoint": "model:simulate",
                                     "grid": {"x": [1.0, 2.0]}, "seeds_per_set": SEEDS}))
    url = f"s3://{bucket}/results/slow"
    env = _env(local_env, s3_server)
    args = ["-f", preset("prod-warm").file, "-f", values, *DIRECT, "--study", study,
            "--state-dir", tmp_path / "state", "--results-store", url, "--no-progress"]
    first = local_cli.start(args, env)
    total, deadline = SETS * SEEDS, time.monotonic() + 240
    while _stored_runs(s3_server, bucket, "results/slow/manifest.json") < total // 2:
        assert first.popen.poll() is None, f"the study ended before half:\n{first.output}"
        assert time.monotonic() < deadline, f"no half of the study in 240s:\n{first.output}"
        time.sleep(0.1)
    os.killpg(first.popen.pid, signal.SIGKILL)          # the client and its cluster
    first.wait(30)
    first.cleanup()

    again = local_cli.run(args, env)
    assert again.popen.returncode == 0, again.output
    [resumed] = [ln for ln in again.stdout.splitlines() if ln.startswith("resuming from")]
    assert resumed.startswith(f"resuming from {url}: "), resumed
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    rows = ResultsStore.open(url).table().to_pylist()
    keys = [(r["set_id"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == total, (len(keys), len(set(keys)))
    shown = local_cli.run([url], env, command="results")
    assert shown.popen.returncode == 0, shown.output
    assert f"runs: {total:,} of {total:,} done (0 failed), 0 missing" in shown.stdout
