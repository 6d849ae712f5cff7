"""`dask worker --preload modelops_runtime.preload`: the entry point the chart and the
local mode name. The preload itself lives with the worker side (worker/hooks/startup.py)."""

from .worker.hooks.startup import EXIT_CONFIG, dask_setup, dask_teardown

__all__ = ["EXIT_CONFIG", "dask_setup", "dask_teardown"]
