"""The warm process pool of one Dask worker process.

- covers: the handle of one process (``process``, with ``watch``, ``logtail``, ``failures``,
  ``orphans``), the policy (``pool``), the memory sampler (``memory``), templates for fresh
  processes (``template``), scratch dirs (``scratch``), reply decoding (``decode``).
- parts: ``runner/`` (what runs inside the child), ``venvs/`` (the venv store).
- see also: docs/design.md (the wire protocol between worker and runner).
"""
