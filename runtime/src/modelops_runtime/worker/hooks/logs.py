"""Logging for the runtime: one stderr handler on the ``modelops_runtime`` logger.

Dask configures handlers for its own ``distributed`` loggers only; without this, the
runtime's INFO lines (the startup line users grep for) would never reach the pod log.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "modelops_runtime"
# the same layout as distributed's log lines, so both read as one log
FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

log = logging.getLogger(LOGGER)


def configure(level: str | int = logging.INFO) -> logging.Logger:
    """Attach the stderr handler once (idempotent) and set the level."""
    if not any(getattr(h, "_modelops", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._modelops = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)
    return log


def flush() -> None:
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
