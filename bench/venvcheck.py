"""What checking a cached venv (MODELOPS_VALIDATE_DEPS) costs, for a numpy venv built by uv
from the locked wheelhouse, side by side in one run:

* sizes — the check before the file record: every RECORD-listed file's size (``installed_digest``)
* record — every file against the build's record, nothing moved (no file read)
* record_hashed — the same after every file's ctime moved (uv linking the files into another
  venv does that): every file read and hashed
* build_record — what a build adds: scanning and hashing every file, comparing with RECORD
* interpreter — the venv's interpreter starting (part of the full check, unchanged)
* first_use — a worker process's first use: the full check through ``VenvCheck``
* hit — ``VenvCache.get`` of a checked venv (what every later task pays)

Runs alone: ``.venv/bin/python bench/venvcheck.py`` (not part of ``make bench``'s report;
needs ``make wheelhouse``). Everything lives in one temporary directory removed at the end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from modelops_runtime.bundles import remove_tree
from modelops_runtime.worker.packages import installed_digest
from modelops_runtime.worker.warm.venvs.check import VenvCheck
from modelops_runtime.worker.warm.venvs.keys import FINGERPRINT
from modelops_runtime.worker.warm.venvs.record import not_as_packaged, record_problem, scan
from modelops_runtime.worker.warm.venvs.store import VenvCache

from common import environ, side_by_side

HERE = Path(__file__).resolve().parent
WHEELHOUSE = HERE.parent / ".tools" / "wheelhouse"
REQUIREMENTS = ["numpy==2.4.6"]


def run(root: Path, *, smoke: bool = False) -> dict:
    env = {"UV_FIND_LINKS": str(WHEELHOUSE), "UV_OFFLINE": "1"}
    with environ(env):
        cache = VenvCache(root / "venvs", passthrough=list(env))
        venv = cache.get(REQUIREMENTS)
    os.close(venv.lease)
    dest, key = venv.path, venv.key
    digest = json.loads((dest / FINGERPRINT).read_text())["files"]
    files = sum(len(names) for _, _, names in os.walk(dest))

    def hit() -> None:
        os.close(cache.get(REQUIREMENTS).lease)

    def record() -> None:
        assert record_problem(dest, FINGERPRINT, digest) is None

    def first_use() -> None:
        assert VenvCheck(True).problem(dest, key, REQUIREMENTS) is None

    def build_record() -> None:
        assert not not_as_packaged(dest, scan(dest, FINGERPRINT))

    hit()
    rounds, n = (2, 3) if smoke else (5, 10)
    samples = side_by_side({
        "sizes": lambda: installed_digest(dest), "record": record,
        "interpreter": lambda: VenvCheck._interpreter_problem(dest),
        "first_use": first_use, "build_record": build_record},
        rounds=rounds, per_round=n)
    samples.update(side_by_side({"hit": hit}, rounds=rounds, per_round=n * 100))
    for dirpath, _, names in os.walk(dest):  # every ctime moved, nothing else
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & 0o7777)
    samples.update(side_by_side({"record_hashed": record}, rounds=rounds, per_round=max(1, n // 3)))
    ms = {k: round(s.median * 1e3, 3) for k, s in samples.items()}
    return {"venv": REQUIREMENTS, "files": files, "median_ms": ms,
            "record_over_sizes": round(ms["record"] / ms["sizes"], 2),
            "load": os.getloadavg()[0]}


if __name__ == "__main__":
    tmp = Path(tempfile.mkdtemp(prefix="bench-venvcheck-"))
    try:
        print(json.dumps(run(tmp, smoke="--smoke" in sys.argv), indent=1))
    finally:
        remove_tree(tmp)
