"""Executors: where and how bundle code runs on a Dask worker process."""

from .base import ExecEnv

__all__ = ["ExecEnv", "make_executor"]


def make_executor(config, bundles):
    """Build the executor that MODELOPS_EXECUTOR_TYPE selects."""
    from ...config import ExecutorType

    if config.executor_type is ExecutorType.direct:
        from .direct import DirectExecEnv

        return DirectExecEnv(config, bundles)
    from .warm import IsolatedWarmExecEnv

    return IsolatedWarmExecEnv(config, bundles)
