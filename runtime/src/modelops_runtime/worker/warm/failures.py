"""Why a warm process could not be started or was lost.

- covers: the typed error of a failed start (the venv's fault or the worker's limit), how
  a finished process is described, and :class:`Lost` (a process ended during an exchange).
- see also: ``worker/limits.py`` (which errnos are limits of the worker, and what to change).
"""

from __future__ import annotations

import signal
import tempfile

from ...errors import EnvironmentBuildError, ModelOpsError
from ..counters import RemovalReason
from ..limits import VENV_ERRNOS, errno_reason, limit_error

def describe_exit(returncode: int | None) -> tuple[str, int | None, str | None]:
    """(human text, exit code, signal name) of a finished process."""
    if returncode is None:
        return "did not exit", None, None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}", None, name
    return f"exited with code {returncode}", returncode, None


def start_error(exc: OSError, venv, step: str) -> ModelOpsError:
    """The typed error for a warm process that could not be started in ``venv`` (a
    :class:`~.venvs.Venv`): the venv's fault only if exec'ing its interpreter failed with
    an errno that means so."""
    if step == "exec" and exc.errno in VENV_ERRNOS and exc.filename == str(venv.python):
        reason, name = errno_reason(exc)
        return EnvironmentBuildError(
            f"cannot start a warm process: {venv.python}: {reason}. The venv {venv.path} is "
            "damaged (its interpreter is missing, not executable, or links to a Python that "
            "is gone); remove that directory and the next task rebuilds it.",
            requirements=[], uv_output="", errno_name=name, strerror=exc.strerror)
    what = {"pipes": "creating its pipes",
            "scratch": f"creating its working directory in {tempfile.gettempdir()}",
            "exec": f"starting {venv.python}"}[step]
    return limit_error(exc, f"cannot start a warm process: {what}")


class Lost(Exception):
    """The process is gone (or was killed) during an exchange; ``error`` is for the user."""

    def __init__(self, reason: RemovalReason, error: ModelOpsError) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error
