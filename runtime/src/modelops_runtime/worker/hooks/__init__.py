"""What Dask calls in a worker: the preload (``startup``), the ``modelops`` WorkerPlugin,
the process's executor (``runtime``), the /metrics routes, logging and hardening.

- covers: the top floor of the worker side; it builds an executor and hands it tasks.
- does not: run bundle code (``executors/`` and ``warm/`` do).
"""
