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
from dataclasses import dataclass

from distributed.diagnostics.plugin import WorkerPlugin

from . import __version__
from .bundles import BundleStore
from .config import ExecutorType, RuntimeConfig
from .errors import ConfigError
from .executors import ExecEnv, make_executor
from .logs import log

PLUGIN_NAME = "modelops"


@dataclass
class _Runtime:
    config: RuntimeConfig
    executor: ExecEnv
    owner: "ModelOpsPlugin"


_lock = threading.Lock()
_runtime: _Runtime | None = None
_validated: RuntimeConfig | None = None  # read by the preload from this process's env


def load_config() -> RuntimeConfig:
    """This process's RuntimeConfig, read from the environment once (raises ConfigError).

    The preload calls it before the worker accepts tasks; setup reuses the result so the
    unknown-variable warnings appear once."""
    global _validated
    if _validated is None:
        _validated = RuntimeConfig.from_env()
    return _validated


def _current() -> _Runtime:
    # one read of the global: a shutdown may clear it at any moment (e.g. while /metrics
    # is scraped), so callers must never check it and then read it again
    rt = _runtime
    if rt is None:
        raise ConfigError(
            "no modelops runtime in this Dask worker process: start workers with "
            "`dask worker ... --preload modelops_runtime.preload` (the chart does this)",
            variable=None, value=None, allowed="--preload modelops_runtime.preload")
    return rt


def current_executor() -> ExecEnv:
    """The executor of this worker process (for code running inside a task)."""
    return _current().executor


def current_config() -> RuntimeConfig:
    """The RuntimeConfig of this worker process's running executor."""
    return _current().config


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
        global _runtime
        from .metrics import install as install_metrics
        install_metrics(worker)  # modelops_* series on /metrics (idempotent)
        with _lock:
            if _runtime is not None:
                # registered again (e.g. by a client): keep the running executor
                _runtime.owner = self
                self.config, self.executor = _runtime.config, _runtime.executor
                log.info("modelops runtime: plugin registered again; keeping the running "
                         "executor=%s", self.config.executor_type.value)
                return
            config = load_config()
            executor = make_executor(config, BundleStore(config))
            _runtime = _Runtime(config, executor, self)
            self.config, self.executor = config, executor
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
    rt = _runtime
    if rt is not None and rt.owner is owner:
        threading.Thread(target=shutdown_runtime, args=(owner,), daemon=True,
                         name="modelops-shutdown").start()


def shutdown_runtime(owner: ModelOpsPlugin | None = None) -> None:
    """Shut the executor down (no child process survives); idempotent.

    With ``owner``, only if that plugin instance still owns the runtime."""
    global _runtime
    with _lock:
        rt = _runtime
        if rt is None or (owner is not None and rt.owner is not owner):
            return
        _runtime = None
    log.info("modelops runtime: shutting down executor=%s", rt.config.executor_type.value)
    rt.executor.shutdown()
