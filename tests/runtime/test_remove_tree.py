"""remove_tree (bundles/readonly.py), which removes read-only trees: several worker
processes of a pod remove the same leftovers of a dead one at start, at once."""

from __future__ import annotations

import multiprocessing
import os

from modelops_runtime.bundles import make_read_only, remove_tree


def _tree(root, dirs: int = 30, depth: int = 4) -> None:
    for i in range(dirs):
        path = root.joinpath(*(f"d{i}-{level}" for level in range(depth)), "__pycache__")
        path.mkdir(parents=True)
        for j in range(5):
            (path / f"m{j}.pyc").write_bytes(b"x" * 64)
    make_read_only(root)


def _remove(path: str, go) -> None:
    go.wait(30)
    remove_tree(path)  # raises in the child (exit code 1) if it fails


def test_processes_removing_the_same_read_only_tree_at_once_all_succeed(tmp_path):
    """Regression: a worker process crashed at start ("Nanny failed to start") when
    another one removed a directory of the same leftover first: rmtree's error hook called
    os.open(path) without flags (TypeError), or retried a path already gone."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(8):
        root = tmp_path / f"leftover-{attempt}"
        _tree(root)
        go = ctx.Event()
        procs = [ctx.Process(target=_remove, args=(str(root), go)) for _ in range(4)]
        for proc in procs:
            proc.start()
        go.set()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0], f"attempt {attempt}"
        assert not root.exists()
    assert os.listdir(tmp_path) == []
