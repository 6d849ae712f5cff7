"""Bundles in an S3 repository on a real S3 API server (support/s3.py): packed there, fetched
by real workers, and every bad access one typed line naming the repository and where the
credentials came from, with nothing cached."""

from __future__ import annotations

import pytest

from modelops_runtime.bundles import BundleStore, pack
from modelops_runtime.client import gather_study, submit
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.errors import BundleNotFound, BundleRepositoryError
from modelops_runtime.models import SimTask
from support.bundles import SIM_MODEL, write_bundle
from support.ports import HeldPort

FILES = {"model.py": SIM_MODEL, "pkg/__init__.py": "", "pkg/util.py": "X = 1\n",
         "requirements.txt": ""}
SECRET = "Secret s3-creds"   # what the chart renders as MODELOPS_BUNDLE_CREDENTIALS


@pytest.fixture
def repo(s3_server, monkeypatch):
    """A fresh bucket's s3:// URL, with this process's AWS_* pointing at the server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.bucket('bundles')}/team/bundles"


def _store(tmp_path, repo: str, credentials: str | None = SECRET) -> BundleStore:
    return BundleStore(RuntimeConfig(bundle_repo=repo, bundle_cache_dir=tmp_path / "cache",
                                     bundle_credentials=credentials))


BOOKKEEPING = (".locks", ".manifests", ".bytecode")


def _cached(store: BundleStore) -> list[str]:
    """What is in the bundle cache besides bookkeeping (locks, manifests), and any
    compiled byte code of a bundle (none unless it was unpacked)."""
    return _entries(store.cache_dir)


def _entries(cache) -> list[str]:
    if not cache.exists():
        return []
    compiled = cache / ".bytecode"
    return sorted([p.name for p in cache.iterdir() if p.name not in BOOKKEEPING]
                  + ([f".bytecode/{p.name}" for p in compiled.iterdir()]
                     if compiled.is_dir() else []))


def test_pack_stores_into_s3_and_a_worker_store_fetches_it(s3_server, repo, tmp_path):
    src = write_bundle(tmp_path / "src", FILES)
    ref = pack(src, repo)
    assert ref == pack(src, str(tmp_path / "local"))   # the same archive, wherever it is
    bucket, prefix = repo[5:].split("/", 1)
    assert s3_server.keys(bucket) == [f"{prefix}/{ref[7:]}.tar.gz"]   # no .partial- left
    store = _store(tmp_path, repo)
    assert (store.path(ref) / "pkg" / "util.py").read_text() == "X = 1\n"
    assert [e for e in _cached(store) if not e.startswith(".bytecode/")] == [ref[7:]]


def _bad_access(s3_server, monkeypatch, tmp_path, repo, env, expect, credentials=SECRET):
    """Fetching a packed bundle with ``env`` fails with one line naming the repository,
    where the credentials came from (names only) and ``expect``; nothing is cached."""
    src = write_bundle(tmp_path / "src", FILES)
    ref = pack(src, repo)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = _store(tmp_path, repo, credentials)
    with pytest.raises(BundleRepositoryError) as info:
        store.path(ref)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"from repository {repo}:" in msg and expect in msg, msg
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in msg, msg
    if credentials:
        assert f"from {credentials}" in msg, msg
    for value in (s3_server.secret_key, env.get("AWS_SECRET_ACCESS_KEY", "-" * 30)):
        assert value not in msg             # names, never values
    assert info.value.repo == repo and info.value.cause in msg
    assert _cached(store) == []          # nothing fetched, nothing half-unpacked
    return msg


def test_a_wrong_secret_key_is_one_line(s3_server, repo, monkeypatch, tmp_path):
    _bad_access(s3_server, monkeypatch, tmp_path, repo,
                {"AWS_SECRET_ACCESS_KEY": "not-the-secret-key-of-this-server-0000"},
                "the secret key does not match the access key (wrong AWS_SECRET_ACCESS_KEY)")


def test_an_unknown_access_key_is_one_line(s3_server, repo, monkeypatch, tmp_path):
    _bad_access(s3_server, monkeypatch, tmp_path, repo,
                {"AWS_ACCESS_KEY_ID": "MOUNKNOWNKEY0000", "AWS_SECRET_ACCESS_KEY": "x" * 30},
                "the access key is not known to the server (wrong AWS_ACCESS_KEY_ID)")


def test_an_unknown_bucket_is_one_line(s3_server, repo, monkeypatch, tmp_path):
    src = write_bundle(tmp_path / "src", FILES)
    ref = pack(src, repo)
    missing = "s3://no-such-bucket-here/team/bundles"
    store = _store(tmp_path, missing, credentials=None)
    with pytest.raises(BundleRepositoryError) as info:
        store.path(ref)
    msg = str(info.value)
    assert f"from repository {missing}: the bucket 'no-such-bucket-here' does not exist" in msg
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from the environment" in msg
    assert f"endpoint {s3_server.endpoint} (AWS_ENDPOINT_URL)" in msg
    assert _cached(store) == []
    # packing into it is refused too (and does not create the bucket)
    with pytest.raises(BundleRepositoryError, match=f"repository {missing}: the bucket"):
        pack(src, missing)
    assert "no-such-bucket-here" not in [b["Name"] for b in
                                         s3_server.client().list_buckets()["Buckets"]]


def test_an_unreachable_endpoint_is_one_line(s3_server, repo, monkeypatch, tmp_path):
    with HeldPort() as dead:   # bound, never listening: connections are refused
        _bad_access(s3_server, monkeypatch, tmp_path, repo,
                    {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead.port}"},
                    "the endpoint cannot be reached")


def test_a_reference_not_in_the_repository_is_bundle_not_found(s3_server, repo, tmp_path):
    pack(write_bundle(tmp_path / "src", FILES), repo)
    store = _store(tmp_path, repo)
    ref = "sha256:" + "e" * 64
    with pytest.raises(BundleNotFound) as info:
        store.path(ref)
    msg = str(info.value)
    assert f"bundle {ref} is not in repository {repo} (credentials AWS_ACCESS_KEY_ID, " \
           f"AWS_SECRET_ACCESS_KEY from {SECRET}; endpoint {s3_server.endpoint}" in msg, msg
    assert s3_server.secret_key not in msg
    assert _cached(store) == []


def test_workers_fetch_from_s3_and_bad_access_fails_the_task_typed(s3_server, repo,
                                                                    dask_cluster, tmp_path):
    """Real `dask worker`s with the chart's variables: one worker reaches the bucket, one
    has a wrong key; the second's tasks fail typed (BundleRepositoryError, the client
    gets the line) and the worker keeps serving."""
    ref = pack(write_bundle(tmp_path / "src", FILES), repo)
    env = {"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLE_REPO": repo,
           "MODELOPS_BUNDLE_CREDENTIALS": SECRET, **s3_server.env()}
    cluster, client = dask_cluster(env, nworkers=1, nthreads=1)
    study = gather_study(client, submit(client, [
        SimTask(bundle=ref, entrypoint="model:simulate", params={"x": 2.0}, seed=s)
        for s in range(3)], study="s3_ok"), progress=False)
    assert not study.failures and [r.outputs["value"] for r in study.results] == [0.0, 2.0, 4.0]
    assert ref[7:] in _entries(cluster.root / "bundles")

    bad_env = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-key-0000000000000000"}
    bad, bad_client = dask_cluster(bad_env, nworkers=1, nthreads=1)
    study = gather_study(bad_client, submit(bad_client, [
        SimTask(bundle=ref, entrypoint="model:simulate", seed=1)], study="s3_bad"),
        progress=False)
    [failure] = study.failures
    assert isinstance(failure.error, BundleRepositoryError), failure.error
    assert f"from repository {repo}: the secret key does not match" in str(failure.error)
    assert f"from {SECRET}" in str(failure.error)
    assert "wrong-secret-key" not in str(failure.error)
    assert _entries(bad.root / "bundles") == []
    # the worker is still there and serves the next task (which fails the same way)
    again = submit(bad_client, [SimTask(bundle=ref, entrypoint="model:simulate", seed=2)],
                   study="s3_again")
    with pytest.raises(BundleRepositoryError):
        again[0].result(timeout=120)
    assert len(bad_client.scheduler_info()["workers"]) == 1
