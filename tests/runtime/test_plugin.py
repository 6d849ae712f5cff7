"""The `modelops` WorkerPlugin on real workers: registered once, kept on re-registration,
torn down on shutdown."""

from __future__ import annotations

import os
import signal

import pytest

from modelops_runtime.client import submit
from modelops_runtime.errors import ConfigError
from modelops_runtime.models import SimTask
from modelops_runtime.plugin import ModelOpsPlugin
from support.bundles import SIM_MODEL, make_bundle
from support.cluster import tail, wait_for


def _identity_fn():
    """A task function (defined locally so cloudpickle ships it by value to the worker)."""
    def executor_identity():
        from modelops_runtime.plugin import current_executor

        return os.getpid(), id(current_executor())
    return executor_identity


def test_registering_again_keeps_the_running_executor(dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL})
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct",
                                    "MODELOPS_BUNDLE_REPO": str(repo)}, nworkers=1, nthreads=1)
    _executor_identity = _identity_fn()
    before = client.submit(_executor_identity, pure=False).result(timeout=60)
    first = submit(client, [SimTask(bundle=ref, entrypoint="model:simulate", seed=1)],
                   study="a")[0].result(timeout=60)

    client.register_plugin(ModelOpsPlugin())
    client.register_plugin(ModelOpsPlugin())

    after = client.submit(_executor_identity, pure=False).result(timeout=60)
    second = submit(client, [SimTask(bundle=ref, entrypoint="model:simulate", seed=2)],
                    study="a")[0].result(timeout=60)
    assert after == before  # same process, same executor object
    assert (first.process_task_count, second.process_task_count) == (1, 2)
    log = cluster.workers[0].log_text()
    assert "keeping the running executor=direct" in log
    assert log.count("INFO - modelops runtime: executor=") == 1  # built once
    assert "shutting down executor" not in log


def test_unregistering_shuts_the_executor_down(dask_cluster, tmp_path):
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct"}, nworkers=1)
    _executor_identity = _identity_fn()
    client.register_plugin(ModelOpsPlugin())
    client.unregister_worker_plugin("modelops")
    wait_for(lambda: "shutting down executor=direct" in cluster.workers[0].log_text(), 60,
             "the executor to shut down", on_fail=lambda: tail(cluster.workers[0].log))
    with pytest.raises(ConfigError, match="no modelops runtime in this Dask worker process"):
        client.submit(_executor_identity, pure=False).result(timeout=60)


def test_sigterm_to_the_worker_command_tears_down_cleanly(dask_cluster, wait_gone):
    """Kubernetes sends SIGTERM to the container's main process only."""
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct"}, nworkers=2)
    worker = cluster.workers[0]
    pids = cluster.tree_pids() - {cluster.scheduler.popen.pid}
    os.kill(worker.popen.pid, signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "`dask worker` to exit on SIGTERM",
             on_fail=lambda: tail(worker.log))
    log = worker.log_text()
    assert log.count("shutting down executor=direct") == 2, log
    # every process of the command goes (multiprocessing's resource tracker a moment later)
    wait_gone(pids)

