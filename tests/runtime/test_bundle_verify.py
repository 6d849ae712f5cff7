"""An unpacked bundle is checked against its manifest when a worker process first uses it:
one byte of a .py changed on disk (same size, same mtime) is found, and the bundle is
unpacked again from the repository instead of running. Real files, a real `dask worker`."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from modelops_runtime.bundles import BundleStore
from modelops_runtime.client import SimTask, submit
from modelops_runtime.config import RuntimeConfig
from support.bundles import make_bundle

MODEL = "VALUE = 1\n\ndef simulate(params, seed):\n    return {'value': VALUE, 'seed': seed}\n"


def _flip_one_byte(path: Path) -> None:
    """VALUE = 1 → VALUE = 2: same size, mtime and mode put back (what a bit flip or a
    careless edit leaves)."""
    before = path.stat()
    os.chmod(path, 0o644)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"VALUE = 1", b"VALUE = 2", 1))
    os.chmod(path, stat.S_IMODE(before.st_mode))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_byte_is_found_and_the_bundle_unpacked_again(tmp_path, caplog):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    config = RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=tmp_path / "cache")
    tree = BundleStore(config).path(ref)
    good = _sha(tree / "model.py")
    assert not [p.name for p in tree.iterdir() if "manifest" in p.name]  # not in the bundle
    _flip_one_byte(tree / "model.py")
    # the same process does not look again (checked once per process)…
    # …a new worker process does
    with caplog.at_level("WARNING", logger="modelops_runtime.bundles"):
        again = BundleStore(config).path(ref)
    assert again == tree and _sha(again / "model.py") == good
    assert "model.py changed (its content no longer hashes to the archive's)" in caplog.text
    # and nothing else was left in the cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()
                  if not p.name.startswith(".")) == [ref.split(":")[1]]
    assert not list((tmp_path / "cache").glob(".trash-*"))


def test_added_and_removed_files_and_a_lost_manifest_are_found(tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    config = RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=tmp_path / "cache")
    tree = BundleStore(config).path(ref)
    manifest = tmp_path / "cache" / ".manifests" / f"{ref.split(':')[1]}.json"
    assert set(json.loads(manifest.read_text())["files"]) == {"model.py", "requirements.txt"}
    os.chmod(tree, 0o755)
    (tree / "sitecustomize.py").write_text("print('injected')\n")
    assert not (BundleStore(config).path(ref) / "sitecustomize.py").exists()
    os.chmod(tree, 0o755)
    (tree / "requirements.txt").unlink()
    assert (BundleStore(config).path(ref) / "requirements.txt").exists()
    manifest.unlink()  # an unpack by an older runtime: checked by unpacking again
    assert _sha(BundleStore(config).path(ref) / "model.py") == _sha(tmp_path / "bundle" / "model.py")
    assert manifest.exists()


def test_a_worker_process_never_runs_a_changed_bundle(dask_cluster, tmp_path):
    """The row: one byte of a .py changed on disk, same size and mtime, ran undetected with
    a changed result. Now a worker process's first use unpacks it again."""
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct",
                                    "MODELOPS_BUNDLE_REPO": str(repo)})
    task = SimTask(bundle=ref, entrypoint="model:simulate", params={}, seed=1)
    assert submit(client, [task], study="before")[0].result(60).outputs["value"] == 1
    tree = cluster.root / "bundles" / ref.split(":")[1]
    _flip_one_byte(tree / "model.py")
    client.restart()  # a new worker process (as after a pod restart or a worker crash)
    result = submit(client, [task], study="after")[0].result(60)
    assert result.outputs["value"] == 1, "the changed bundle ran"
    assert "VALUE = 1" in (tree / "model.py").read_text()
