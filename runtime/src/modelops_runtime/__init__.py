"""modelops-runtime: runs simulation bundles on Dask workers.

The configuration flow is fixed: ``MODELOPS_*`` environment → :class:`RuntimeConfig`
→ the ``modelops`` WorkerPlugin → one executor per Dask worker process.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelops-runtime")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"
