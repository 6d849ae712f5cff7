"""Native threads: how many threads the native libraries under a model may start.

BLAS (OpenBLAS, MKL, BLIS, Apple's vecLib), OpenMP, NumExpr and Numba size their thread
pools from environment variables read when they are loaded; left unset, each starts one
thread per core. Dask's nanny sets three of them to 1 for its worker processes
(``distributed.nanny.pre-spawn-environ``), but warm processes get an allow-listed
environment that dropped them, and a pod's processes × cores threads oversubscribe it.
MODELOPS_NATIVE_THREADS sets all of them, to the same value, in warm processes (their
environment is built per spawn, so it always takes effect) and in the Dask worker process
itself (executor=direct runs bundle code there). In the worker process only libraries
loaded later read it: ``import distributed`` already loads numpy (and its OpenBLAS) before
any preload runs, so the chart also renders these variables into the worker container's
environment, which the nanny passes to the worker processes it spawns.
"""

from __future__ import annotations

import os
import sys

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


NATIVE_MODULES = ("numpy", "scipy", "numexpr", "numba", "torch")


def apply_to_this_process(n: int) -> list[str]:
    """Set the variables in this process (the Dask worker: executor=direct runs bundle code
    here). Called from the preload, before the worker accepts a task: a native library
    loaded later (by bundle code) reads them; one loaded earlier keeps its pool. Returns
    the variables this changed while such a library was already loaded (for a warning)."""
    wanted = thread_env(n)
    changed = [k for k, v in wanted.items() if os.environ.get(k) != v]
    os.environ.update(wanted)
    loaded = [m for m in NATIVE_MODULES if m in sys.modules]
    return changed if loaded else []
