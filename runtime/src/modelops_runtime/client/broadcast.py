"""``client.run`` on the workers that are still there when the call reaches them.

- covers: :func:`run_answered`: a worker that leaves while the call is on its way (a pod
  the autoscaler removes, retiring as a study ends) is left out of the answers instead of
  failing the call, and so the study's report after all its runs finished.
- does not: retry, wait for workers, or hide an error the function itself raised.
- see also: client/environments.py, local/study/run.py (their callers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_answered(client, function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``client.run(function, *args)``: worker address → result, for the workers that
    answered. A worker whose connection closed (it left) is left out; any other error is
    raised as ``client.run`` raises it."""
    answers = client.run(function, *args, on_error="return")
    kept = {}
    for address, value in answers.items():
        if isinstance(value, OSError):       # CommClosedError, refused: the worker is gone
            continue
        if isinstance(value, BaseException):
            raise value
        kept[address] = value
    return kept
