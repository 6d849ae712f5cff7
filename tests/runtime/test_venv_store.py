"""The venv store: keys that tell interpreters apart, immutable generations switched
atomically, leases, and garbage collection under a size budget (real uv builds from local
wheels, real flock leases)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from modelops_runtime.bundles import BundleStore
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.worker.warm.venvs.store import FINGERPRINT, VenvCache
from support.bundles import make_bundle
from support.paths import REPO

KEY_OF_EMPTY = "from modelops_runtime.worker.warm.venvs.keys import venv_key; print(venv_key([]))"


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_two_interpreter_prefixes_get_two_venv_keys(tmp_path):
    """Two images with the same Python version at different prefixes sharing one venv
    volume: the same interpreter binary started from another prefix must not share keys."""
    real = Path(os.path.realpath(sys.executable))
    other = tmp_path / "opt" / "python" / "bin" / real.name
    other.parent.mkdir(parents=True)
    shutil.copy2(real, other)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "runtime" / "src"), sysconfig.get_paths()["purelib"]])}

    def key(python: Path) -> tuple[str, str]:
        out = subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0]);"
                              + KEY_OF_EMPTY], capture_output=True, text=True, env=env,
                             timeout=120, check=True)
        version, digest = out.stdout.split()
        return version, digest

    (v1, k1), (v2, k2) = key(real), key(other)
    assert v1 == v2  # the same Python version…
    assert k1 != k2  # …at another prefix: another venv
    assert key(real) == (v1, k1)  # and a key is stable


def test_gc_keeps_the_venv_in_use_and_removes_the_idle_one(tmp_path, uv_offline):
    root = tmp_path / "venvs"
    cache = VenvCache(root, max_bytes=None)
    used = cache.get(["tinylib==1.0"])
    idle = cache.get(["tinylib==2.0"])
    os.close(idle.lease)  # its warm processes are gone
    assert used.path.is_dir() and idle.path.is_dir()

    cache.max_bytes = 1  # far below: everything unused must go
    cache.collect()
    assert used.path.is_dir(), "a venv in use was collected"
    assert not idle.path.exists() and not (root / idle.key).exists()
    assert cache.stats.snapshot().venvs_collected == 1
    # the one in use still works, and the idle one is rebuilt on demand
    subprocess.run([str(used.python), "-c", "import tinylib"], check=True, timeout=120)
    again = cache.get(["tinylib==2.0"])
    assert again.path != idle.path and not again.cache_hit
    os.close(again.lease)
    os.close(used.lease)
    cache.collect()
    assert [n for n in _names(root) if "@" in n] == []  # nothing in use: all collected


def test_a_rebuild_is_a_new_generation_the_old_one_stays_while_used(tmp_path, uv_offline):
    root = tmp_path / "venvs"
    cache = VenvCache(root)
    first = cache.get(["tinylib==1.0"])
    before = sorted(p.relative_to(first.path).as_posix() for p in first.path.rglob("*"))
    # the fingerprint no longer matches (e.g. written by another runtime): rebuild
    fingerprint = first.path / FINGERPRINT
    os.chmod(first.path, 0o755)
    data = json.loads(fingerprint.read_text())
    data["requirements"] = ["something-else"]
    fingerprint.chmod(0o644)
    fingerprint.write_text(json.dumps(data))
    second = cache.get(["tinylib==1.0"])
    assert second.path != first.path and not second.cache_hit
    assert os.readlink(root / first.key) == second.path.name  # switched atomically
    # the old generation is untouched while its user holds it…
    assert sorted(p.relative_to(first.path).as_posix()
                  for p in first.path.rglob("*")) == before
    cache.collect()
    assert first.path.is_dir()
    os.close(first.lease)  # …and collected once nobody uses it (no budget needed)
    cache.collect()
    assert not first.path.exists() and second.path.is_dir()
    os.close(second.lease)


def test_bundle_gc_keeps_leased_bundles(tmp_path):
    repo = tmp_path / "repo"
    refs = [make_bundle(tmp_path / "src", repo, {"model.py": f"X = {i}\n" * 2000},
                        name=f"b{i}") for i in range(3)]
    config = RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=tmp_path / "bundles",
                           bundles_max_bytes=1)
    store = BundleStore(config)
    counted = []
    store.on_collect = lambda done: counted.append(done.entries)
    path0, lease0 = store.lease(refs[0])
    path1 = store.path(refs[1])  # just fetched: kept for its caller, though over budget
    assert path0.is_dir() and path1.is_dir() and counted == []
    path2 = store.path(refs[2])  # now the unused one goes, the leased one stays
    assert path0.is_dir() and path2.is_dir() and not path1.exists()
    assert counted == [1]
    os.close(lease0)
    again, lease1 = store.lease(refs[1])  # fetched again on demand
    assert (again / "model.py").is_file()
    os.close(lease1)
