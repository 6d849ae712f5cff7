"""Native threads: how many threads the native libraries under a model may start.

BLAS (OpenBLAS, MKL, BLIS, Apple's vecLib), OpenMP, NumExpr and Numba size their thread
pools from environment variables read when they are loaded; left unset, each starts one
thread per core. Dask's nanny sets three of them to 1 for its worker processes
(``distributed.nanny.pre-spawn-environ``), but warm processes get an allow-listed
environment that dropped them, and a pod's processes × cores threads oversubscribe it.
MODELOPS_NATIVE_THREADS sets all of them, to the same value, in warm processes and (for
executor=direct) in the Dask worker process itself, before any bundle code runs.
"""

from __future__ import annotations

import os

# every variable a common native library reads for its thread count
THREAD_VARS = (
    "OMP_NUM_THREADS",          # OpenMP (also OpenBLAS built with OpenMP, numba's omp layer)
    "MKL_NUM_THREADS",          # Intel MKL
    "OPENBLAS_NUM_THREADS",     # OpenBLAS (numpy/scipy wheels)
    "BLIS_NUM_THREADS",         # BLIS
    "VECLIB_MAXIMUM_THREADS",   # Apple Accelerate
    "NUMEXPR_NUM_THREADS",      # NumExpr
    "NUMEXPR_MAX_THREADS",      # NumExpr's pool size (it warns when NUM > MAX)
    "NUMBA_NUM_THREADS",        # Numba's parallel=True
)


def thread_env(n: int) -> dict[str, str]:
    """The thread-count variables for ``n`` native threads per task."""
    return dict.fromkeys(THREAD_VARS, str(int(n)))


def apply_to_this_process(n: int) -> None:
    """Set the variables in this process (the Dask worker: executor=direct runs bundle code
    here). Called from the preload, before the worker accepts a task: a native library
    loaded later (by bundle code) reads them; one loaded earlier keeps its pool."""
    os.environ.update(thread_env(n))
