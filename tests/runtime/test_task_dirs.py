"""A template's task directories (worker/warm/scratch.py TaskDirs): every task process
forked from a template finds its working directory as a new one would be -- empty, mode
0700, no extended attribute, accessed and modified at its start -- whatever the task
process before it did to its own, including when that directory is renamed for it instead
of made anew."""

from __future__ import annotations

import os
import time

from modelops_runtime.models import Call
from support.bundles import make_bundle

MODEL = '''
import os, stat

def look(params, seed):
    here = os.getcwd()
    st = os.stat(here)
    try:
        xattrs = os.listxattr(here)
    except OSError:
        xattrs = []
    return {"dir": here, "ino": st.st_ino, "mode": stat.S_IMODE(st.st_mode),
            "entries": os.listdir(here), "xattrs": xattrs, "mtime": st.st_mtime,
            "atime": st.st_atime, "size": st.st_size, "nlink": st.st_nlink}

def mess(params, seed):
    """Leave the working directory otherwise than a new one: as params say."""
    out = look(params, seed)
    if params.get("xattr"):
        try:
            os.setxattr(".", "user.left", b"by an earlier task")
        except OSError as exc:
            out["xattr_error"] = str(exc)
    if params.get("grow"):  # entries made and removed: the directory stays larger
        for i in range(params["grow"]):
            open(f"f{i:05d}", "w").close()
        for i in range(params["grow"]):
            os.unlink(f"f{i:05d}")
    if params.get("file"):
        open("left-behind", "w").close()
    if params.get("mode"):
        os.chmod(".", params["mode"])
    return out
'''


def _as_new(seen: dict, since: float) -> None:
    assert seen["mode"] == 0o700 and seen["entries"] == [] and seen["nlink"] == 2
    assert not [x for x in seen["xattrs"] if x.startswith("user.")], seen["xattrs"]
    # (file times come from a coarse clock: a second of slack, not a timing assertion)
    assert seen["mtime"] >= since - 1 and seen["atime"] >= since - 1, (seen, since)


def test_each_forked_task_finds_its_directory_as_new(tmp_path, warm):
    ex = warm(max_process_reuse=1)
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"model.py": MODEL, "requirements.txt": ""}, name="dirs")

    def run(fn, **params):
        since = time.time()
        out = ex.run(Call(bundle=ref, entrypoint=f"model:{fn}", args=(params, 0))).outputs
        return out, since

    seen = []
    for params in ({}, {"mode": 0o777}, {"xattr": True}, {"grow": 300}, {"file": True},
                   {"mode": 0o500}, {}, {}):
        out, since = run("mess", **params)
        _as_new(out, since)
        assert "xattr_error" not in out, out  # (the sandbox lets a task set one on its own)
        seen.append(out)
    assert len({s["dir"] for s in seen}) == len(seen)  # a new name every time
    # nothing of an earlier task's directory is left under the template's scratch but the
    # few kept empty for the next ones
    assert ex.stats()["removals"]["reuse"] == len(seen)
    # the kept ones are renamed, not made: the same inode again (the birth time and inode
    # number are what differs from a new directory)
    inodes = [s["ino"] for s in seen]
    assert len(set(inodes)) < len(inodes), inodes
    for _ in range(3):
        out, since = run("look")
        _as_new(out, since)
    assert os.path.isdir(os.path.dirname(out["dir"]))
