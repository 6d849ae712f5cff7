"""A model's own numba function, compiled with cache=True (numba writes its cache files)."""

import numpy as np
from numba import njit


@njit(cache=True)
def _walk(seed, steps):
    np.random.seed(seed)
    x = np.zeros(steps)
    for i in range(1, steps):
        x[i] = x[i - 1] + np.random.normal()
    return x


def simulate(params, seed):
    x = _walk(seed, params.get("steps", 200))
    return {"walk": x, "last": x[-1], "steps": np.int32(x.size)}
