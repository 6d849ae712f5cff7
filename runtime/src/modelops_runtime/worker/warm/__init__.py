"""The warm process pool of one Dask worker process: the process handle (process.py),
the pool policy (pool.py), memory (memory.py, watch.py), the runner program, the venv store."""
