"""The ``modelops`` WorkerPlugin: owns the one executor of a Dask worker process.

The executor lives in process-global state, not on the plugin instance, because Dask
replaces a plugin on re-registration by tearing the old instance down and setting the new
one up. A new instance adopts the running executor (so a client that registers the plugin
again keeps the warm processes), and a teardown only shuts the executor down when the
worker is closing or when no new instance adopted it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from ... import __version__
from ...bundles import BundleStore
from ...config import ExecutorType, RuntimeConfig
from . import runtime
from ..executors import ExecEnv, make_executor
from .logs import log
from .runtime import current_config, current_executor, load_config, shutdown_runtime

PLUGIN_NAME = "modelops"


def startup_line(config: RuntimeConfig, worker_address: str = "") -> str:
    import dask
    import distributed

    return (f"modelops runtime: {config.summary()} bundle_repo={config.bundle_repo} "
            f"bundle_cache_dir={config.bundle_cache_dir} worker={worker_address} "
            f"pid={os.getpid()} versions: modelops-runtime={__version__} dask={dask.__version__} "
            f"distributed={distributed.__version__} python={platform.python_version()}")


DIRECT_WARNING = (
    "modelops runtime: executor=direct runs bundle code inside this Dask worker process, "
    "one task at a time (imports are process-global, so tasks of this process are "
    "serialised whatever --nthreads is); bundle modules are re-imported for every task "
    "(module state is reset) but process state (other modules, threads, environment, "
    "working directory) is not. Slower than isolated_warm: use it for debugging only.")


class ModelOpsPlugin(WorkerPlugin):
    """WorkerPlugin ``modelops``: reads RuntimeConfig, builds the executor once."""

    name = PLUGIN_NAME
    idempotent = True  # a client registering it twice keeps the scheduler's copy

    def __init__(self) -> None:
        # no configuration travels with the plugin: each worker reads its own MODELOPS_* env
        self.config: RuntimeConfig | None = None
        self.executor: ExecEnv | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["config"] = state["executor"] = None  # never ship a live executor
        return state

    def setup(self, worker) -> None:
        from .metrics import install as install_metrics
        install_metrics(worker)  # modelops_* series on /metrics (idempotent)
        config, executor, adopted = runtime.start_or_adopt(
            self, lambda config: make_executor(config, BundleStore(config)))
        self.config, self.executor = config, executor
        if adopted:  # registered again (e.g. by a client): keep the running executor
            log.info("modelops runtime: plugin registered again; keeping the running "
                     "executor=%s", config.executor_type.value)
            return
        log.info("%s", startup_line(config, getattr(worker, "address", "")))
        if config.executor_type is ExecutorType.direct:
            log.warning("%s", DIRECT_WARNING)
            if config.task_timeout is not None:
                log.warning("modelops runtime: MODELOPS_TASK_TIMEOUT=%s is not enforced by "
                            "executor=direct (a thread cannot be killed); use isolated_warm",
                            config.task_timeout)

    async def teardown(self, worker) -> None:
        from distributed.core import Status

        if getattr(worker, "status", Status.closing) in (Status.closing, Status.closed,
                                                         Status.closing_gracefully):
            await asyncio.to_thread(shutdown_runtime, self)
            return
        # Removed while the worker keeps running: either replaced by a new registration
        # (whose setup runs right after this returns and adopts the executor) or
        # unregistered. Decide once the event loop is free again.
        asyncio.get_running_loop().call_soon(_release_if_orphaned, self)


def _release_if_orphaned(owner: ModelOpsPlugin) -> None:
    if runtime.owned_by(owner):
        threading.Thread(target=shutdown_runtime, args=(owner,), daemon=True,
                         name="modelops-shutdown").start()


__all__ = ["PLUGIN_NAME", "ModelOpsPlugin", "current_config", "current_executor",
           "load_config", "shutdown_runtime", "startup_line"]
