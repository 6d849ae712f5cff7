"""Real scientific models (tests/realmodels): each ``simulate(params, seed)`` writes what
its library writes at run time (numba's cache, matplotlib's config, joblib's memory, a
figure) and returns numpy arrays and scalars."""
