"""What checking an unpacked bundle against its manifest costs a worker process's first use
of it (issue #24 item 7; target < 5 ms for the SIR example bundle), side by side with the
check's alternative — unpacking the bundle again from the repository — and with a cache hit
(what every later use in that process pays).

Runs alone: ``.venv/bin/python bench/bundleverify.py`` (not part of ``make bench``'s
report). Everything lives in one temporary directory removed at the end.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from modelops_runtime.bundles import BundleStore, pack, remove_tree
from modelops_runtime.bundles.manifest import tree_problem
from modelops_runtime.config import RuntimeConfig

from common import side_by_side

HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parent / "runtime" / "examples" / "sir" / "bundle"


def run(root: Path, *, smoke: bool = False) -> dict:
    repo, cache = root / "repo", root / "cache"
    ref = pack(BUNDLE, str(repo))
    config = RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=cache)
    tree = BundleStore(config).path(ref)
    manifest = cache / ".manifests" / f"{ref.split(':')[1]}.json"
    hit_store = BundleStore(config)
    hit_store.path(ref)

    def verify() -> None:  # a new worker process's first use: the check alone
        assert tree_problem(tree, manifest) is None

    def first_use() -> None:  # the same through BundleStore.path in a new process's store
        BundleStore(config).path(ref)

    def unpack_again() -> None:  # the alternative: fetch, verify the digest, unpack
        other = root / "other"
        remove_tree(other)
        BundleStore(RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=other)).path(ref)

    def hit() -> None:  # later uses in the same process
        hit_store.path(ref)

    rounds, n = (2, 5) if smoke else (5, 40)
    samples = side_by_side({"verify": verify, "first_use": first_use,
                            "unpack_again": unpack_again, "hit": hit},
                           rounds=rounds, per_round=n)
    files = len(json.loads(manifest.read_text())["files"])
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    ms = {k: round(s.median * 1e3, 3) for k, s in samples.items()}
    return {"bundle": str(BUNDLE.relative_to(HERE.parent)), "files": files, "bytes": size,
            "median_ms": ms,
            "first_use_over_unpack": round(ms["first_use"] / ms["unpack_again"], 3),
            "target_ms": 5.0, "met": ms["first_use"] < 5.0}


if __name__ == "__main__":
    tmp = Path(tempfile.mkdtemp(prefix="bench-bundleverify-"))
    try:
        print(json.dumps(run(tmp, smoke="--smoke" in sys.argv), indent=1))
    finally:
        remove_tree(tmp)  # read-only bundle trees included
