"""The ``modelops_*`` series on a real Dask worker's own /metrics (its dashboard server),
read over HTTP the way Prometheus scrapes them, before and after tasks run."""

from __future__ import annotations

from support.cluster import wait_for


def labels_of(executor: str, worker: str, **extra: str) -> tuple:
    return tuple(sorted({"executor": executor, "worker": worker, **extra}.items()))


def value(samples, name: str, labels: tuple, default=None) -> float:
    return samples.get((name, labels), default)


def modelops_workers(samples) -> set[str]:
    """The `worker` labels of every modelops_* series in a scrape."""
    return {dict(labels)["worker"] for name, labels in samples if name.startswith("modelops_")}


def test_warm_worker_metrics_move_when_tasks_run(shared):
    one, other = shared.workers["warm"]
    me = labels_of("isolated_warm", shared.names[one])
    before, before_other = shared.scrape(one), shared.scrape(other)

    info = dict(next(labels for (name, labels) in before
                     if name == "modelops_executor_info" and dict(labels)["worker"]
                     == shared.names[one]))
    assert info["executor"] == "isolated_warm"
    assert info["max_process_reuse"] == "2"

    results = shared.run_on(one, 3)
    assert {r.executor for r in results} == {"isolated_warm"}
    after, after_other = shared.scrape(one), shared.scrape(other)

    def delta(name, labels=me):
        return value(after, name, labels, 0.0) - value(before, name, labels, 0.0)

    def removals(samples, reason):
        return value(samples, "modelops_process_removals_total",
                     labels_of("isolated_warm", shared.names[one], reason=reason), 0.0)

    assert delta("modelops_tasks_total") == 3
    # every task is served by a new or a reused warm process
    assert delta("modelops_process_spawns_total") + delta("modelops_process_reuses_total") == 3
    assert delta("modelops_process_spawns_total") >= 1
    # every spawn looked its venv up in the cache (the first one on this pod built it)
    assert (delta("modelops_venv_cache_hits_total") + delta("modelops_venv_cache_misses_total")
            == delta("modelops_process_spawns_total"))
    assert value(after, "modelops_venv_builds_total", me) == value(
        after, "modelops_venv_cache_misses_total", me)
    # MAX_PROCESS_REUSE=2: three tasks retire at least one process, counted by reason
    assert removals(after, "reuse") - removals(before, "reuse") >= 1
    assert removals(after, "crash") == 0
    # the pool is idle now: one warm process left, holding memory
    state = {s: value(after, "modelops_warm_processes",
                      labels_of("isolated_warm", shared.names[one], state=s))
             for s in ("idle", "busy")}
    assert state == {"idle": 1, "busy": 0}
    assert value(after, "modelops_warm_rss_bytes", me) > 1_000_000
    # the figures are per worker process: the other one's own live series did not move
    other_labels = labels_of("isolated_warm", shared.names[other])
    assert (value(after_other, "modelops_tasks_total", other_labels, 0)
            == value(before_other, "modelops_tasks_total", other_labels, 0))
    # Dask's own worker series are still served next to ours
    assert any(name.startswith("dask_worker_") for name, _ in after)


def test_one_port_shows_every_process_of_its_dask_worker_command(shared):
    """In a pod only the first process binds the scraped port: it also serves the other
    processes' series (published every few seconds), and only those of its own pod."""
    first, second = shared.workers["warm"]
    theirs = labels_of("isolated_warm", shared.names[second])
    start = value(shared.scrape(first), "modelops_tasks_total", theirs, 0.0)
    shared.run_on(second, 2, start_seed=50)
    live = value(shared.scrape(second), "modelops_tasks_total", theirs)
    assert live >= start + 2
    # the first process's port catches up with the second's figures (bounded wait)
    samples = wait_for(
        lambda: (s := shared.scrape(first)) and
        value(s, "modelops_tasks_total", theirs, 0.0) >= live and s,
        60, "the second process's tasks on the first process's /metrics")
    assert modelops_workers(samples) == {shared.names[first], shared.names[second]}
    # another `dask worker` command (another pod) is not mixed in
    assert modelops_workers(shared.scrape(shared.workers["direct"][0])) == {"direct"}


def test_direct_worker_exports_executor_and_tasks(shared):
    (addr,) = shared.workers["direct"]
    me = labels_of("direct", "direct")
    before = shared.scrape(addr)
    shared.run_on(addr, 2)
    after = shared.scrape(addr)
    assert value(after, "modelops_tasks_total", me) - value(
        before, "modelops_tasks_total", me, 0) == 2
    info = [dict(labels) for name, labels in after if name == "modelops_executor_info"]
    assert [(i["executor"], i["worker"]) for i in info] == [("direct", "direct")]
    # direct has no warm processes and no venvs: those series are absent, not zero
    names = {name for name, _ in after if name.startswith("modelops_")}
    assert names == {"modelops_executor_info", "modelops_tasks_total"}


def test_worker_without_runtime_serves_no_modelops_series(shared):
    (addr,) = shared.workers["bare"]
    samples = shared.scrape(addr)
    assert not [name for name, _ in samples if name.startswith("modelops_")]
    assert any(name.startswith("dask_worker_") for name, _ in samples)
