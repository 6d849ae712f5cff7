"""The `modelops` WorkerPlugin on real workers: registered once, kept on re-registration,
torn down on shutdown."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from modelops_runtime.bundles import BundleStore
from modelops_runtime.client import submit
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.errors import ConfigError
from modelops_runtime.models import SimTask
from modelops_runtime.worker.hooks import runtime
from modelops_runtime.worker.executors.direct import DirectExecEnv
from modelops_runtime.worker.hooks.plugin import ModelOpsPlugin
from support.bundles import SIM_MODEL, make_bundle
from support.cluster import tail, wait_for


def _identity_fn():
    """A task function (defined locally so cloudpickle ships it by value to the worker)."""
    def executor_identity():
        from modelops_runtime.worker.hooks.runtime import current_executor

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


@pytest.mark.parametrize("executor", ["direct", "isolated_warm"])
def test_sigterm_to_the_worker_command_tears_down_cleanly(dask_cluster, tmp_path, procs,
                                                          wait_gone, executor):
    """Kubernetes sends SIGTERM to the container's main process only: every worker process,
    its executor and (isolated_warm) its warm processes and their working dirs go."""
    repo, scratch = tmp_path / "repo", tmp_path / "tmp"
    scratch.mkdir()
    ref = make_bundle(tmp_path, repo, {"model.py": SIM_MODEL})
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": executor, "TMPDIR": str(scratch),
                                    "MODELOPS_BUNDLE_REPO": str(repo)}, nworkers=2)
    worker = cluster.workers[0]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    results = [submit(client, [SimTask(bundle=ref, entrypoint="model:simulate", seed=i)],
                      study=f"before{i}", workers=[address])[0].result(timeout=120)
               for i, address in enumerate(workers)]  # one task on each worker process
    tree = [procs.track(pid) for pid in cluster.tree_pids() - {cluster.scheduler.popen.pid}]
    ran_in = {r.outputs["pid"] for r in results}
    worker_pids = set(client.run(os.getpid).values())
    if executor == "isolated_warm":  # a warm process of each worker process ran the task
        assert len(ran_in) == 2 and not ran_in & worker_pids
        assert ran_in <= {p.pid for p in procs.running(tree)}
        assert len(list(scratch.glob("modelops-warm-*"))) == 2
    else:
        assert ran_in == worker_pids

    os.kill(worker.popen.pid, signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "`dask worker` to exit on SIGTERM",
             on_fail=lambda: tail(worker.log))
    log = worker.log_text()
    assert log.count(f"shutting down executor={executor}") == 2, log
    # every process of the command goes (multiprocessing's resource tracker a moment later)
    wait_gone(tree)
    assert not list(scratch.glob("modelops-warm-*"))  # nor any warm process's working dir


def test_config_read_during_a_shutdown_is_the_config_or_a_clear_error():
    """A /metrics scrape may read the current config while the worker shuts the runtime
    down: it gets the config or the typed 'no runtime' error, never an AttributeError. A
    thread trace hook (instrumentation; the real code runs) holds the scrape right after it
    found a runtime until the shutdown has cleared it: the widest window for a second read."""
    config = RuntimeConfig.from_env({"MODELOPS_EXECUTOR_TYPE": "direct"})
    owner = ModelOpsPlugin()
    found = threading.Event()

    def on_return(frame, event, arg):
        if event == "return":
            found.set()
            wait_for(lambda: runtime._runtime is None, 60, "the runtime to be shut down")
        return on_return

    def tracer(frame, event, arg):  # functions current_config calls: hold on their return
        caller = frame.f_back
        if event == "call" and caller is not None \
                and caller.f_code is runtime.current_config.__code__:
            return on_return
        return None

    outcome = {}

    def scrape():
        try:
            outcome["value"] = runtime.current_config()
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["value"] = exc

    runtime._runtime = runtime._Runtime(config, DirectExecEnv(config, BundleStore(config)), owner)
    try:
        threading.settrace(tracer)
        try:
            scraper = threading.Thread(target=scrape)
            scraper.start()
        finally:
            threading.settrace(None)
        wait_for(found.is_set, 60, "the scrape to find the runtime")
        runtime.shutdown_runtime(owner)
        scraper.join(60)
    finally:
        runtime._runtime = None
    value = outcome["value"]
    assert value is config or isinstance(value, ConfigError), repr(value)
