"""executor=direct cannot change the published bundle for later tasks, attacked the way
bundle code would, with the worker run as the pods run it (support/unprivileged.py).

Bundle code in direct mode has the worker's own rights: mode bits stop a plain write, and
a ``chmod`` gives them back (the owner may always). Whatever a task changes in its unpacked
bundle, the next task (same process, the worst case) runs the published files.
"""

from __future__ import annotations

import itertools

import pytest

from modelops_runtime.client import submit
from modelops_runtime.models import SimTask
from support.bundles import make_bundle
from support.unprivileged import unprivileged_cluster

MODEL = '''
import os, pathlib, stat

HERE = pathlib.Path(__file__).parent  # the unpacked bundle


def _attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _writable(path):
    os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)


def look(params, seed):
    return {"data": (HERE / "data.txt").read_text(), "answer": __import__("answer").ANSWER,
            "files": sorted(p.relative_to(HERE).as_posix() for p in HERE.rglob("*")),
            "writable": sorted(p.relative_to(HERE).as_posix() for p in HERE.rglob("*")
                               if os.stat(p).st_mode & 0o222)}


def attack(params, seed):
    data, answer, keep = HERE / "data.txt", HERE / "answer.py", HERE / "sub" / "keep.txt"
    return {
        "write": _attempt(lambda: data.write_text("tampered")),
        "delete": _attempt(keep.unlink),
        "add": _attempt(lambda: (HERE / "planted.py").write_text("X = 1")),
        # the owner's chmod gives the write bits back: then each succeeds
        "chmod_write": _attempt(lambda: (_writable(data), data.write_text("tampered"))),
        "chmod_code": _attempt(lambda: (_writable(answer), answer.write_text("ANSWER = 666"))),
        "chmod_delete": _attempt(lambda: (_writable(keep.parent), keep.unlink())),
        "chmod_add": _attempt(lambda: (_writable(HERE),
                                       (HERE / "planted.py").write_text("X = 1"))),
    }
'''
FILES = {"model.py": MODEL, "data.txt": "published", "answer.py": "ANSWER = 42\n",
         "sub/keep.txt": "kept"}
_studies = itertools.count()


@pytest.fixture(scope="module")
def direct_worker():
    """(client, root, uid): one `dask worker` (nanny + 1 worker process, 1 thread) with
    executor=direct, unprivileged; caches and TMPDIR under ``root``."""
    with unprivileged_cluster("modelops-direct-bundle-", {"MODELOPS_EXECUTOR_TYPE": "direct"},
                              nthreads=1) as started:
        yield started


def _run(client, ref, fn):
    (future,) = submit(client, [SimTask(bundle=ref, entrypoint=f"model:{fn}", params={},
                                        seed=1)], study=f"direct{next(_studies)}")
    return future.result(timeout=300)


def test_a_direct_task_cannot_change_its_bundle_for_the_next_task(direct_worker):
    """Attack: write, delete and add files of the unpacked bundle, plainly (refused by
    mode) and after a chmod (the owner's right: done), including a module a later task
    imports. The next task in the same process still runs the published files, all
    read-only again. Before: it read "tampered", imported ANSWER = 666 and saw planted.py."""
    cluster, client, root, uid = direct_worker
    ref = make_bundle(root / "src", root / "repo", FILES, name="direct-attack")
    published = _run(client, ref, "look")
    assert published.executor == "direct"
    assert published.outputs == {
        "data": "published", "answer": 42, "writable": [],
        "files": ["answer.py", "data.txt", "model.py", "sub", "sub/keep.txt"]}, published.outputs

    attacked = _run(client, ref, "attack")
    assert attacked.pid == published.pid  # the same worker process: the worst case
    assert {k: v for k, v in attacked.outputs.items() if not k.startswith("chmod")} == {
        "write": "refused: PermissionError", "delete": "refused: PermissionError",
        "add": "refused: PermissionError"}, attacked.outputs  # mode bits hold (no root)
    # what an unprivileged owner cannot be stopped from: undone before the next task
    assert attacked.outputs["chmod_write"] == "done", attacked.outputs

    after = _run(client, ref, "look")
    assert after.pid == published.pid
    assert after.outputs == published.outputs, after.outputs
    assert "unpacking it again from the repository" in cluster.logs()
