"""Metrics files shared by the processes of one `dask worker`: written through mkstemp in
a private directory whose owner is checked, never through a planted symlink."""

from __future__ import annotations

import os

import pytest

from modelops_runtime.errors import ConfigError
from modelops_runtime.worker.hooks.metrics import WorkerFigures, publish


def _figures() -> WorkerFigures:
    return WorkerFigures(pid=os.getpid(), worker="w0", executor="isolated_warm", stats={})


def test_figures_are_written_privately_and_atomically(tmp_path):
    directory = tmp_path / "modelops-metrics" / "123"
    publish(_figures(), directory)
    assert [p.name for p in directory.iterdir()] == [f"{os.getpid()}.json"]  # no temp left
    assert directory.stat().st_mode & 0o777 == 0o700
    assert directory.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("plant", ["symlink", "foreign", "open"])
def test_a_planted_metrics_directory_is_refused(tmp_path, plant):
    """Attack: the metrics directory prepared by someone else before the worker starts."""
    root = tmp_path / "modelops-metrics"
    root.mkdir(mode=0o700)
    directory, target = root / "123", tmp_path / "elsewhere"
    target.mkdir()
    if plant == "symlink":
        directory.symlink_to(target)
    else:
        directory.mkdir()
        if plant == "foreign":
            if os.geteuid() != 0:
                pytest.skip("needs root to create a directory owned by another uid")
            os.chown(directory, 65534, 65534)
        else:
            directory.chmod(0o777)
    with pytest.raises(ConfigError, match="is not a private directory") as info:
        publish(_figures(), directory)
    assert len(str(info.value).splitlines()) == 1
    assert list(target.iterdir()) == []
    if plant != "symlink":
        assert list(directory.iterdir()) == []
