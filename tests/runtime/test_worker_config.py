"""Configuration reaches real `dask worker --preload modelops_runtime.preload` processes.

Dask logs and swallows exceptions raised in preloads and in WorkerPlugin.setup; these tests
prove a bad configuration still stops the whole `dask worker` command (no restart loop
under the nanny) with one clear line in its log.
"""

from __future__ import annotations

import pytest

from support.cluster import tail, wait_for

BAD = [
    ("MODELOPS_EXECUTOR_TYPE", "warm",
     "invalid configuration: MODELOPS_EXECUTOR_TYPE='warm' is not allowed; expected one of: "
     "isolated_warm, direct."),
    ("MODELOPS_MAX_WARM_PROCESSES", "0",
     "invalid configuration: MODELOPS_MAX_WARM_PROCESSES='0' is not allowed; expected an "
     "integer >= 1."),
    ("MODELOPS_PROCESS_TTL", "-1",
     "invalid configuration: MODELOPS_PROCESS_TTL='-1' is not allowed; expected a number > 0 "
     "(seconds)."),
    ("MODELOPS_FORCE_FRESH_VENV", "maybe",
     "invalid configuration: MODELOPS_FORCE_FRESH_VENV='maybe' is not allowed; expected true "
     "or false."),
    ("MODELOPS_FRESH_PROCESS_FROM", "zygote",
     "invalid configuration: MODELOPS_FRESH_PROCESS_FROM='zygote' is not allowed; expected "
     "one of: template, exec."),
    ("MODELOPS_FRESH_VENVS_AHEAD", "-1",
     "invalid configuration: MODELOPS_FRESH_VENVS_AHEAD='-1' is not allowed; expected an "
     "integer >= 0."),
]


@pytest.mark.parametrize("variable, value, line", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_stops_the_worker_command(dask_cluster, wait_gone, variable, value, line):
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct", variable: value},
                                   nworkers=2, nthreads=1, wait=False)
    worker = cluster.workers[0]

    def exited():
        cluster.tree_pids()  # remember every worker process we ever saw
        return worker.popen.poll() is not None

    wait_for(exited, 120, "`dask worker` to exit on a bad configuration",
             on_fail=lambda: tail(worker.log))
    assert worker.popen.returncode != 0
    log = worker.log_text()
    errors = [ln for ln in log.splitlines() if "modelops_runtime - ERROR" in ln]
    # the same clear line from each worker process that got that far (the command stops
    # at the first failed start), and no restarts
    assert 1 <= len(errors) <= 2, log
    assert all(line in ln for ln in errors), log
    assert "Restarting worker" not in log
    assert "Registered to:" not in log  # never accepted tasks
    assert client.scheduler_info(n_workers=-1)["workers"] == {}
    # no worker process survives the command
    others = cluster.seen - {cluster.scheduler.popen.pid}
    wait_gone(others)



def test_misspelt_variable_is_named_with_the_right_one(dask_cluster):
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct",
                                    "MODELOPS_EXECUTER_TYPE": "direct"}, nworkers=1)
    log = cluster.workers[0].log_text()
    assert ("WARNING - unknown environment variable MODELOPS_EXECUTER_TYPE is ignored; "
            "did you mean MODELOPS_EXECUTOR_TYPE?") in log
    # the warning appears once per worker process, not once per read
    assert log.count("unknown environment variable MODELOPS_EXECUTER_TYPE") == 1
    assert "modelops runtime: executor=direct" in log


def test_startup_line_is_what_kubectl_logs_grep_finds(dask_cluster):
    cluster, _ = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct",
                               "MODELOPS_MAX_PROCESS_REUSE": "7",
                               "MODELOPS_MEM_LIMIT_BYTES": "2Gi"}, nworkers=1)
    log = cluster.workers[0].log_text()
    lines = [ln for ln in log.splitlines() if "INFO - modelops runtime: " in ln]
    assert len(lines) == 1, log
    line = lines[0]
    for part in ("executor=direct", "max_process_reuse=7", f"mem_limit_bytes={2 * 2**30}",
                 "modelops-runtime=", "dask=", "python="):
        assert part in line, line
