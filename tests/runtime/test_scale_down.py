"""Scale-down and drains lose nothing: a `dask worker --nworkers 2` command SIGTERMed
mid-study (what Kubernetes sends on a Deployment scale-down, a node drain, a spot reclaim)
retires its workers through the scheduler, and every run of the study gets exactly one
result. Repeated on one scheduler and one surviving worker (the issue saw 9/200 finished
results fail "ended with status lost" in 1 run of 5)."""

from __future__ import annotations

import os
import signal
import threading

import psutil

from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study
from support.bundles import make_bundle
from support.cluster import tail, wait_for

REPEATS = int(os.environ.get("SCALE_DOWN_REPEATS", "20"))
RUNS = 16

MODEL = '''
import os, pathlib, time
def simulate(params, seed):
    time.sleep(0.15)
    pathlib.Path(params["marks"], f"{os.getpid()}-{seed}").touch()  # who ran it
    return {"seed": seed}
'''


def _tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_sigterm_mid_study_retires_gracefully_and_every_run_has_one_result(dask_cluster,
                                                                           tmp_path):
    _drains(dask_cluster, tmp_path, "direct", REPEATS)


def test_runs_in_warm_processes_finish_or_move_on_sigterm(dask_cluster, tmp_path):
    """The same with runs in warm processes (prod-warm): a retiring worker lets them finish
    instead of stopping its pool under them."""
    _drains(dask_cluster, tmp_path, "isolated_warm", 2)


def _drains(dask_cluster, tmp_path, executor: str, repeats: int) -> None:
    repo = tmp_path / "repo"
    ref = make_bundle(tmp_path, repo, {"model.py": MODEL, "requirements.txt": ""})
    cluster, client = dask_cluster({"MODELOPS_EXECUTOR_TYPE": executor,
                                    "MODELOPS_BUNDLE_REPO": str(repo),
                                    "MODELOPS_WARM_WRITABLE_PATHS": str(tmp_path)},
                                   nworkers=1)
    def names() -> set[str]:
        return {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}

    victims = [cluster.start_worker(nworkers=2, name="victim0")]
    for attempt in range(repeats):
        marks = tmp_path / f"marks-{attempt}"
        marks.mkdir()
        victim = victims[attempt]
        wait_for(lambda: {f"victim{attempt}-0", f"victim{attempt}-1"} <= names()
                 or victim.popen.poll() is not None, 90, f"victim{attempt} to connect",
                 on_fail=cluster.logs)
        if attempt + 1 < repeats:  # the next one starts meanwhile (one cluster, less waiting)
            victims.append(cluster.start_worker(nworkers=2, name=f"victim{attempt + 1}"))
        victim_pids = _tree(victim.popen.pid)  # grows: warm processes start later
        plan = StudyPlan(name=f"drain{attempt}", bundle=ref, entrypoint="model:simulate",
                         sets=[ParamSet.of({"marks": str(marks)}, "one", index=0)],
                         seeds=Seeds(first=0, count=RUNS))
        outcome: dict = {}

        def gather():
            try:
                outcome["result"] = gather_study(client, submit_study(client, plan, batch=1),
                                                 progress=False)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                outcome["error"] = exc

        thread = threading.Thread(target=gather, daemon=True)
        thread.start()
        def victim_ran() -> int:
            victim_pids.update(_tree(victim.popen.pid))
            return sum(int(m.name.split("-")[0]) in victim_pids for m in marks.iterdir())

        wait_for(lambda: victim_ran() >= 2 or not thread.is_alive(),
                 60, f"victim{attempt} to finish two runs", on_fail=cluster.logs)
        os.kill(victim.popen.pid, signal.SIGTERM)   # as the kubelet does: PID 1 only
        thread.join(180)
        where = f"attempt {attempt}: "
        assert not thread.is_alive(), where + "the study did not end\n" + cluster.logs()
        assert "error" not in outcome, where + repr(outcome["error"])
        result = outcome["result"]
        assert not result.failures, where + "; ".join(
            f"seed {f.seed}: {f.error_type}: {f.message}" for f in result.failures)
        got = result.sets[0].results
        assert sorted(got) == list(range(RUNS)), where + f"runs with a result: {sorted(got)}"
        assert all(got[s].outputs == {"seed": s} for s in got)
    for attempt, victim in enumerate(victims):  # each retired gracefully, by itself
        where = f"victim{attempt}: "
        assert victim.popen.wait(60) == 0, where + tail(victim.log)
        log = victim.log_text()
        assert "retiring 2 worker process(es) gracefully" in log, where + tail(victim.log)
        assert "results handed over" in log, where + tail(victim.log)
        assert "killing" not in log, where + tail(victim.log)
        # each nanny closed its worker process itself: a worker closed by the scheduler
        # instead made its process wait 2 s for the nanny's stop message and log this
        assert "Worker process died unexpectedly" not in log, where + tail(victim.log)
