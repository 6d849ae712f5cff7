"""The one error hierarchy of the runtime.

Every error a user can see derives from :class:`ModelOpsError`. Messages say what was
wrong, what is allowed and what to do. Errors travel from Dask workers to clients by
pickle, so every class keeps its structured fields through a pickle round trip.
"""

from __future__ import annotations

from typing import Any


class ModelOpsError(Exception):
    """Base of every error raised by modelops-runtime."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self):  # keep structured fields across pickling (Dask → client)
        return (_restore, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


def _restore(cls: type[ModelOpsError], message: str, fields: dict[str, Any]) -> ModelOpsError:
    return cls(message, **fields)


class ConfigError(ModelOpsError):
    """A MODELOPS_* variable is invalid. Fields: variable, value, allowed."""


class BundleError(ModelOpsError):
    """A bundle cannot be packed, fetched, verified, unpacked or imported."""


class BundleNotFound(BundleError):
    """No archive with that digest exists in the bundle repository."""


class BundleRepositoryError(BundleError):
    """The bundle repository cannot be read or written: wrong credentials, no such bucket,
    an unreachable endpoint. Fields: repo, credentials (where they came from: variable
    names and their source, never values), cause."""


class BundleDigestMismatch(BundleError):
    """The fetched archive's content does not hash to the requested digest."""


class UnsafeBundle(BundleError):
    """The archive holds an entry that could escape the bundle directory."""


class EntrypointError(BundleError):
    """The entrypoint string is malformed or names a module/function that does not exist."""


class EnvironmentBuildError(ModelOpsError):
    """The bundle's environment could not be built (carries uv's message)."""


class MissingDependencyError(EnvironmentBuildError):
    """Bundle code imported a module its environment does not have."""


class SimulationError(ModelOpsError):
    """User code raised. Fields: remote_type, remote_message, remote_traceback."""


class ProcessCrashed(ModelOpsError):
    """A warm process died during a task. Fields: exit_code, signal_name, log_tail."""


class MemoryLimitExceeded(ModelOpsError):
    """A warm process tree went over MODELOPS_MEM_LIMIT_BYTES. Fields: limit_bytes, peak_bytes."""


class ProcessLimitExceeded(ModelOpsError):
    """A task tried to have more processes alive at once than MODELOPS_MAX_TASK_PROCESSES.
    Fields: limit, refused (forks refused), pid (its warm process)."""


class TaskTimeout(ModelOpsError):
    """A task ran longer than MODELOPS_TASK_TIMEOUT. Fields: timeout_s."""


class ProcessStartFailed(ModelOpsError):
    """The worker could not start a warm process for a reason outside the venv (open-file,
    memory or process limits). Fields: errno_name, strerror."""


class WorkerStopping(ModelOpsError):
    """The Dask worker process is shutting down: its warm processes were stopped, tasks
    running in them ended, and it takes no new ones. Fields: pid (the warm process, if any)."""


class SchedulerLost(ModelOpsError):
    """The client lost its Dask scheduler (it exited, was restarted or became unreachable):
    the futures it held are gone with it. Fields: address, finished (runs with a result
    before it went), total; ``partial`` (client side only): what was gathered."""


class LocalModeError(ModelOpsError):
    """The local cluster could not be prepared, started or run."""


class ChartRenderError(LocalModeError):
    """``helm template`` rejected the chart with these values. Fields: helm_output."""
