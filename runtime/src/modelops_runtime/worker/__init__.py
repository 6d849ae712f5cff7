"""What runs inside `dask worker`.

- covers: ``hooks/`` (what Dask calls: the preload, the ``modelops`` plugin, metrics),
  ``executors/`` (direct and warm), ``warm/`` (the warm process pool), and the shared
  floor below them: ``counters`` (pool figures), ``packages``, ``native``, ``limits``.
- does not: import the client or local sides (arrows point down).
"""
