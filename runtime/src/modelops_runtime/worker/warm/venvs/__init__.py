"""The venv store: one virtualenv per dependency set, built by uv, shared by a pod's workers.

- covers: ``store`` (the cache, fingerprints, generations), ``keys`` (cache keys and
  directory names), ``uv`` (running uv in a session of its own), ``uvcache`` (uv's cache
  within its budget), ``clones`` (fresh venvs as clones of a pristine build), ``prefetch``
  (fresh venvs built ahead).
- does not: start warm processes (``warm/process``).
"""
