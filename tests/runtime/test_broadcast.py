"""The client's calls on every worker (the pids and package sets a study's report reads)
leave out a worker that is gone by the time the call reaches it (an autoscaled pod retiring
as the study ends) instead of failing the study after all its runs finished. Seen in
tests/cluster/autoscaling: `run_study` raised CommClosedError from `client.run`."""

from __future__ import annotations

import os

import pytest

from modelops_runtime.client.broadcast import run_answered
from support.cluster import wait_for


def test_a_worker_that_leaves_during_the_call_is_left_out(dask_cluster):
    def _leave_if(address: str, dask_worker=None) -> int:  # local: pickled by value
        """The worker at ``address`` dies on the spot (its nanny restarts it), as a pod
        that retires while the broadcast is on its way."""
        if dask_worker.address == address:
            os._exit(0)
        return os.getpid()

    _, client = dask_cluster(nworkers=2)

    def workers() -> set[str]:
        return set(client.scheduler_info(n_workers=-1)["workers"])

    leaving = min(workers())
    with pytest.raises(OSError):   # what `client.run` alone does (CommClosedError)
        client.run(_leave_if, leaving)
    # its nanny restarts it under a new address; the scheduler forgets the old one
    wait_for(lambda: len(workers()) == 2 and leaving not in workers(), 120,
             "the worker's restart")
    leaving, staying = sorted(workers())
    answers = run_answered(client, _leave_if, leaving)
    assert list(answers) == [staying] and isinstance(answers[staying], int)


def test_an_error_of_the_function_itself_still_raises(dask_cluster):
    _, client = dask_cluster(nworkers=1)
    with pytest.raises(ZeroDivisionError):
        run_answered(client, lambda: 1 / 0)

