"""The warm process pool of one Dask worker process: the handle of one process (process.py,
with watch.py, logtail.py, failures.py, orphans.py), the pool policy (pool.py), the memory
sampler (memory.py), the runner program (runner.py with frames.py, confine.py and
forkserver.py; compiled by program.py), scratch dirs and the venv store (venvs.py)."""
