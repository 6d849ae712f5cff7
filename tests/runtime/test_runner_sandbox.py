"""The sandbox a template prepares once for its task processes (runner confine.py), applied
in a real child process: roots another root covers are left out, and the sandbox made of
the rest allows and refuses exactly what the full list would."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

CHILD = r'''
import json, os, sys
from modelops_runtime.worker.warm.runner import confine

base = sys.argv[1]
at = lambda *p: os.path.join(base, *p)
mine = (at("top"), at("top", "nested"), at("link"), at("top", "file.txt"), at("top"),
        at("missing"))
counted = confine.prepare_sandbox((at("w"),), mine)
kept, again = len(counted.fds), len(counted.again)
confine.release(counted)
prepared = confine.prepare_sandbox((at("w"),), mine + (sys.prefix, *confine.SYSTEM_READABLE))
why = confine.enforce(confine.ruleset((at("scratch"),), (), prepared))
confine.release(prepared)

def can(action, path):
    try:
        if action == "read":
            with open(path) as fh:
                fh.read()
        else:
            with open(path, "w") as fh:
                fh.write("x")
        return True
    except PermissionError:
        return False

seen = {f"{action} {name}": can(action, at(*name.split("/"))) for action, name in [
    ("read", "top/a.txt"), ("read", "top/nested/b.txt"), ("read", "link/c.txt"),
    ("read", "top/file.txt"), ("read", "secret/s.txt"), ("write", "w/out.txt"),
    ("write", "scratch/out.txt"), ("write", "top/out.txt"), ("write", "secret/out.txt")]}
os.write(1, json.dumps({"why": why, "kept": kept, "again": again, "seen": seen}).encode())
'''


def _landlock_abi() -> int:
    return ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)


def test_covered_roots_are_left_out_and_the_sandbox_is_the_same(tmp_path):
    if not sys.platform.startswith("linux") or _landlock_abi() < 1:
        pytest.skip("this kernel has no Landlock: warm processes run without a sandbox")
    for d in ("top/nested", "top/nested2", "secret", "w", "scratch"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("top/a.txt", "top/nested/b.txt", "top/nested2/c.txt", "top/file.txt",
              "secret/s.txt"):
        (tmp_path / f).write_text("data")
    (tmp_path / "link").symlink_to(tmp_path / "top" / "nested2")
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["why"] == ""
    # w and top stay; top/nested, link (-> top/nested2), top/file.txt and top again are
    # beneath top; the missing root is left out, not tried again for every task
    assert (got["kept"], got["again"]) == (2, 0)
    assert got["seen"] == {
        "read top/a.txt": True, "read top/nested/b.txt": True, "read link/c.txt": True,
        "read top/file.txt": True, "read secret/s.txt": False, "write w/out.txt": True,
        "write scratch/out.txt": True, "write top/out.txt": False,
        "write secret/out.txt": False}
