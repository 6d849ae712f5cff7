"""Idle warm process RSS vs a bare interpreter of the same venv that imports the same
modules: what keeping a process warm costs beyond the code it holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psutil

from common import NOOP_MODEL, Workspace

# imports every module it is given, then idles on stdin. Those it cannot find by name
# (ImportError: a module loaded from a file, or a platform's refusing import) are listed;
# anything else a module raises is a bug here: the interpreter exits with its traceback
BARE = r"""
import importlib, json, sys
path, names = json.loads(sys.argv[1])
sys.path[:0] = [p for p in path if p not in sys.path]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        failed.append(name)
print(json.dumps(failed), flush=True)
sys.stdin.read()
"""


def _settled_rss(pid: int, samples: int = 5) -> int:
    """RSS once it stops changing (a few reads, the last one)."""
    proc = psutil.Process(pid)
    last = proc.memory_info().rss
    for _ in range(samples):
        time.sleep(0.05)  # measurement spacing, not synchronisation
        last = proc.memory_info().rss
    return last


def run(ws: Workspace, *, smoke: bool) -> dict[str, Any]:
    ref, _ = ws.bundle("memory", {"model.py": NOOP_MODEL})
    from modelops_runtime.models import Call

    warm = ws.executor(executor_type="isolated_warm")
    bare = None
    try:
        for seed in range(20):
            warm.run(Call(bundle=ref, entrypoint="model:noop", args=({}, seed)))
        loaded = warm.run(Call(bundle=ref, entrypoint="model:modules", args=({}, 0)))
        names = [m for m in loaded.outputs["modules"] if m != "__main__"]
        pid = loaded.pid
        warm_rss = _settled_rss(pid)
        python = str(warm.venvs.get([]).python)
        bare = subprocess.Popen([python, "-I", "-u", "-c", BARE,
                                 json.dumps([loaded.outputs["path"], names])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        failed = json.loads(bare.stdout.readline() or "null")
        if failed is None:
            raise RuntimeError("the bare interpreter exited before importing the modules")
        bare_rss = _settled_rss(bare.pid)
    finally:
        if bare is not None:
            bare.stdin.close()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
                bare.wait()
        warm.shutdown()
    return {"warm_rss_bytes": warm_rss, "bare_rss_bytes": bare_rss,
            "modules": len(names), "not_importable": failed}


if __name__ == "__main__":  # quick look: python bench/memory.py
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        print(json.dumps(run(Workspace(Path(tmp)), smoke="--smoke" in sys.argv), indent=1))
