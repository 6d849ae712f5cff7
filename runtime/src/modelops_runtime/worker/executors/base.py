"""The executor contract shared by DirectExecEnv and IsolatedWarmExecEnv."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ...bundles import BundleStore
    from ...config import RuntimeConfig
    from ...models import Call, SimResult


class ExecEnv(abc.ABC):
    """Runs :class:`Call` s from bundles. One instance per Dask worker process, built once
    by the ``modelops`` WorkerPlugin and shared by all of that process's threads, so every
    method must be thread-safe."""

    name: ClassVar[str]

    def __init__(self, config: "RuntimeConfig", bundles: "BundleStore") -> None:
        self.config = config
        self.bundles = bundles

    @abc.abstractmethod
    def run(self, call: "Call") -> "SimResult":
        """Run ``call.entrypoint(*call.args)`` from ``call.bundle`` and return its result.

        Raises a :class:`~modelops_runtime.errors.ModelOpsError` subclass on failure; the
        executor stays usable for the next call whatever happened."""

    def run_many(self, calls: "list[Call]") -> "list[SimResult | Exception]":
        """Run ``calls`` (a batch of tiny runs) one after the other: one entry per call,
        its result or the error it raised. A stopping worker (WorkerStopping) fails the
        whole batch. Executors may do it in fewer round trips."""
        from ...errors import WorkerStopping

        out: "list[SimResult | Exception]" = []
        for call in calls:
            try:
                out.append(self.run(call))
            except WorkerStopping:
                raise
            except Exception as exc:  # noqa: BLE001 - that run's own failure
                out.append(exc)
        return out

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release everything: no child process may outlive this call."""

    def package_sets(self) -> dict[str, list[str]]:
        """Package sets the tasks of this executor ran with: digest (``SimResult.env_digest``)
        → sorted ``name==version`` list."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Counters for observability (see stats.py); empty when there is nothing to count."""
        return {}
