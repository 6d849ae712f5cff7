"""The venv store: one virtualenv per dependency set, built by uv, shared by a pod's workers.

- covers: ``store`` (the cache, fingerprints, generations), ``check`` (may a cached
  venv be reused), ``record`` (what a build holds, file by file), ``keys`` (cache keys and
  directory names), ``uv`` (running uv in a session of its own), ``uvcache`` (uv's cache
  within its budget), ``pristine`` (FORCE_FRESH_VENV's one uv build per dependency set
  and host), ``clones`` (fresh venvs as clones of it), ``prefetch`` (fresh venvs built
  ahead).
- does not: start warm processes (``warm/process``).
"""
