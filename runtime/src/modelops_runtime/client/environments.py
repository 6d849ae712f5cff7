"""The package sets a cluster's tasks ran with: ``SimResult.env_digest`` → the full sorted
``name==version`` list, collected once per digest from every worker's executor."""

from __future__ import annotations

from .broadcast import run_answered


def _worker_package_sets() -> dict[str, list[str]]:
    from ..worker.hooks.runtime import current_executor

    return current_executor().package_sets()


def package_sets(client) -> dict[str, list[str]]:
    """Every package set the workers' executors have run tasks with (merged over the workers
    still there: one that left meanwhile is left out)."""
    merged: dict[str, list[str]] = {}
    for sets in run_answered(client, _worker_package_sets).values():
        for digest, packages in sets.items():
            merged.setdefault(digest, packages)
    return dict(sorted(merged.items()))
