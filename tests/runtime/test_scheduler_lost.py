"""A lost scheduler is named: a study whose scheduler is SIGKILLed mid-way ends at once with
one line saying so and what to do, the finished runs kept (``partial``); a plain list of
futures the same. Real `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from modelops_runtime.client import (ParamSet, Seeds, SimTask, StudyPlan, gather_study,
                                     submit, submit_study)
from modelops_runtime.errors import SchedulerLost
from support.bundles import make_bundle
from support.cluster import wait_for

MODEL = '''
import pathlib, time
def simulate(params, seed):
    time.sleep(0.1)
    pathlib.Path(params["marks"], str(seed)).touch()  # the test sees runs finish
    return {"seed": seed}
'''


def _gather_in_thread(client, what) -> dict:
    """gather_study in a thread: the test bounds it (the old code waited forever)."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = gather_study(client, what, progress=False)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


@pytest.mark.parametrize("form", ["study", "list"])
def test_a_scheduler_killed_mid_study_is_named_in_one_line(form, dask_cluster, tmp_path):
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": "direct",
                                    "MODELOPS_BUNDLE_REPO": str(repo)}, nworkers=1)
    total = 200
    marks = tmp_path / "marks"
    marks.mkdir()
    if form == "study":
        plan = StudyPlan(name="lost", bundle=ref, entrypoint="model:simulate",
                         sets=[ParamSet.of({"marks": str(marks)}, "one", index=0)],
                         seeds=Seeds(first=0, count=total))
        what = submit_study(client, plan, window=8, batch=1)
    else:
        what = submit(client, [SimTask(bundle=ref, entrypoint="model:simulate", params={"marks": str(marks)}, seed=i) for i in range(total)])
    outcome = _gather_in_thread(client, what)
    wait_for(lambda: len(list(marks.iterdir())) >= 3 or "error" in outcome, 60,
             "three runs to finish")
    os.killpg(cluster.scheduler.popen.pid, signal.SIGKILL)
    outcome["thread"].join(120)
    assert not outcome["thread"].is_alive(), \
        "gather_study still waits 120 s after the scheduler was killed"
    err = outcome.get("error")
    assert isinstance(err, SchedulerLost), repr(outcome.get("error") or outcome.get("result"))
    message = str(err)
    assert "\n" not in message
    assert f"the Dask scheduler {cluster.address} went away" in message
    assert "submit again once it is back" in message
    partial = err.partial
    kept = partial.runs if form == "study" else len(partial.results)
    assert 0 < err.finished < total and kept == err.finished == err.fields["finished"]
    assert f"{err.finished} of {total} runs had finished" in message
    if form == "study":  # the kept runs are real results, each once
        seeds = [seed for s in partial.sets for seed in s.results]
        assert len(seeds) == len(set(seeds)) and not partial.failures
        assert all(partial.sets[0].results[s].outputs == {"seed": s} for s in seeds)
