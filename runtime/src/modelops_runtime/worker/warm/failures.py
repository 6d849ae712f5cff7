"""Why a warm process could not be started or was lost: errno classification of start
failures (the venv's fault, or a limit of the worker) and :class:`Lost`, raised when a
process ends during an exchange."""

from __future__ import annotations

import errno
import signal
import tempfile

from ...errors import EnvironmentBuildError, ModelOpsError, ProcessStartFailed
from ..stats import RemovalReason

# exec errors that mean the venv's interpreter is missing or unusable (anything else, e.g.
# EMFILE or ENOMEM, is a limit of the worker, not a fault of the venv)
VENV_ERRNOS = {errno.ENOENT, errno.ENOEXEC, errno.EACCES, errno.ENOTDIR, errno.ELOOP}
_LIMIT_HINTS = {
    errno.EMFILE: "raise the worker's open-file limit (ulimit -n) or lower "
                  "MODELOPS_MAX_WARM_PROCESSES (each warm process takes 5 of the worker's)",
    errno.ENFILE: "the node ran out of open files; lower MODELOPS_MAX_WARM_PROCESSES",
    errno.ENOMEM: "give the worker pod more memory or lower MODELOPS_MAX_WARM_PROCESSES / "
                  "set MODELOPS_POOL_MEMORY_BYTES",
    errno.EAGAIN: "the pod's process limit (pids) is reached; lower "
                  "MODELOPS_MAX_WARM_PROCESSES or raise the limit",
    errno.ENOSPC: "free space in the worker's TMPDIR",
    errno.EDQUOT: "free space in the worker's TMPDIR",
}
LIMIT_ERRNOS = frozenset(_LIMIT_HINTS)


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


def _reason(exc: OSError) -> tuple[str, str]:
    name = errno.errorcode.get(exc.errno or 0, "unknown errno")
    return f"{exc.strerror or exc} ({name})", name


def limit_error(exc: OSError, what: str) -> ProcessStartFailed:
    """A process or pipe the worker could not create for a reason of its own (open files,
    memory, process limits, TMPDIR), named with its errno and what to change."""
    reason, name = _reason(exc)
    hint = _LIMIT_HINTS.get(exc.errno or 0, "check the worker's limits (open files, "
                            "processes, memory) and its TMPDIR")
    return ProcessStartFailed(
        f"{what} failed: {reason}. This is a limit or fault of the Dask worker process, not "
        f"of the bundle or its venv: {hint}.", errno_name=name, strerror=exc.strerror)


def start_error(exc: OSError, venv, step: str) -> ModelOpsError:
    """The typed error for a warm process that could not be started in ``venv`` (a
    :class:`~.venvs.Venv`): the venv's fault only if exec'ing its interpreter failed with
    an errno that means so."""
    if step == "exec" and exc.errno in VENV_ERRNOS and exc.filename == str(venv.python):
        reason, name = _reason(exc)
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
