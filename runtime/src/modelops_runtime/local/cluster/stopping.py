"""How ``local`` and ``diagnose`` end on Ctrl-C and SIGTERM: SIGTERM is handled like
Ctrl-C (the running cluster is torn down), then the command says which it was and exits
with 130 (Ctrl-C) or 143 (SIGTERM)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from ...exitcodes import EXIT_INTERRUPTED, EXIT_TERMINATED



class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: tear everything down, then exit."""


def _raise_terminated(signum, frame):
    raise Terminated()


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise :class:`Terminated`; returns what puts the old handler back."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def stopped(exc: KeyboardInterrupt, what: str) -> int:
    """Say that ``what`` was stopped by Ctrl-C or SIGTERM; the exit code for it."""
    term = isinstance(exc, Terminated)
    print(f"{'terminated' if term else 'interrupted'}: {what} was stopped, no process is "
          "left", file=sys.stderr)
    return EXIT_TERMINATED if term else EXIT_INTERRUPTED
