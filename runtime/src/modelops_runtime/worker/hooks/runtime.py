"""The one modelops runtime of a Dask worker process: its RuntimeConfig and executor.

Process-global state, not plugin-instance state, because Dask replaces a plugin on
re-registration by tearing the old instance down and setting the new one up (see
plugin.py). Code running inside a task reads it with :func:`current_executor`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ...config import RuntimeConfig
from ...errors import ConfigError
from ..executors.base import ExecEnv
from .logs import log


@dataclass
class _Runtime:
    config: RuntimeConfig
    executor: ExecEnv
    owner: object  # the ModelOpsPlugin instance that owns it


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


def start_or_adopt(owner: object, build: Callable[[RuntimeConfig], ExecEnv]
                   ) -> tuple[RuntimeConfig, ExecEnv, bool]:
    """(config, executor, adopted): the running runtime, now owned by ``owner`` (adopted),
    or a new one whose executor ``build`` makes from this process's config."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.owner = owner
            return _runtime.config, _runtime.executor, True
        config = load_config()
        _runtime = _Runtime(config, build(config), owner)
        return config, _runtime.executor, False


def owned_by(owner: object) -> bool:
    rt = _runtime
    return rt is not None and rt.owner is owner


def shutdown_runtime(owner: object | None = None) -> None:
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
