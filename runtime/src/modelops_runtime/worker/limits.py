"""Which OS errors are limits of the Dask worker process (open files, memory, processes,
TMPDIR space) rather than faults of a bundle or its venv, and what to change for each.

- covers: errno classification and the typed error that names the limit and the fix.
- does not: decide whether to retry (the callers do).
"""

from __future__ import annotations

import errno

from ..errors import ProcessStartFailed

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


def errno_reason(exc: OSError) -> tuple[str, str]:
    name = errno.errorcode.get(exc.errno or 0, "unknown errno")
    return f"{exc.strerror or exc} ({name})", name


def limit_error(exc: OSError, what: str) -> ProcessStartFailed:
    """A process or pipe the worker could not create for a reason of its own (open files,
    memory, process limits, TMPDIR), named with its errno and what to change."""
    reason, name = errno_reason(exc)
    hint = _LIMIT_HINTS.get(exc.errno or 0, "check the worker's limits (open files, "
                            "processes, memory) and its TMPDIR")
    return ProcessStartFailed(
        f"{what} failed: {reason}. This is a limit or fault of the Dask worker process, not "
        f"of the bundle or its venv: {hint}.", errno_name=name, strerror=exc.strerror)
