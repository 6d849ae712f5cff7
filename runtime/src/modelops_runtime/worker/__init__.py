"""What runs inside `dask worker`: the preload, the ``modelops`` plugin, the executors,
stats and metrics; ``warm/`` holds the warm process pool."""
