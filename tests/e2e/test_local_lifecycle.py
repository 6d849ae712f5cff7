"""The local cluster's life: a worker killed mid-study, Ctrl-C/SIGTERM, a dying scheduler,
failing sims. Whatever happens, every result or a clear error, and no process left."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from e2e_support import CHART, STUDY, assert_nothing_left, preset
from modelops_runtime.client import gather_study, submit
from modelops_runtime.local.cluster.launch import plan as make_plan
from modelops_runtime.local.cluster.render import render_cluster
from modelops_runtime.local.study.run import Study, pack_study
from modelops_runtime.local.cluster.supervise import LocalCluster
from support.cluster import wait_for


def _slow_study(sleep_s: float = 0.2) -> Study:
    study = Study.load(STUDY)
    return study.model_copy(update={"params": {**study.params, "sleep_s": sleep_s}})


def test_worker_process_killed_mid_study_still_gives_every_result(local_env, reference,
                                                                  tmp_path):
    p = preset("prod-warm")
    plan = make_plan(render_cluster([p.file], chart=CHART), tmp_path / "state",
                          base_env=local_env())
    study = _slow_study()
    with LocalCluster(plan, echo=lambda msg: None) as cluster:
        client = cluster.client()
        tasks = study.tasks(pack_study(study, plan.bundle_repo), 60)
        futures = submit(client, tasks, study="kill")
        wait_for(lambda: sum(f.done() for f in futures) >= 8, 180, "the first results")
        busy = wait_for(lambda: [a for a, keys in client.processing().items() if keys], 60,
                        "a worker process with tasks in flight")
        victim = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(victim, signal.SIGKILL)

        outcome = gather_study(client, futures, progress=False)
        assert not outcome.failures, outcome.failures
        assert [tasks[i].seed for i in outcome.indices] == [t.seed for t in tasks]
        for i, result in zip(outcome.indices, outcome.results):
            assert result.outputs == reference(tasks[i].seed)
        # the nanny replaced the killed process: the cluster is whole again
        wait_for(lambda: len(client.nthreads()) == p.worker_processes, 120,
                 "the killed worker process to be replaced")
        assert victim not in client.run(os.getpid).values()
        seen = cluster.pids()
    assert victim in seen
    assert not cluster.alive(), "processes left behind after the study"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_interrupting_a_kept_cluster_mid_study_stops_everything(sig, code, local_cli,
                                                                local_env, tmp_path):
    state = tmp_path / "state"
    run = local_cli.start(["-f", preset("prod-warm").file, "--keep", "--state-dir", state],
                          local_env())
    run.wait_for_line("press Ctrl-C to stop it", 180)
    address = re.search(r"Client\('(tcp://127\.0\.0\.1:\d+)'\)", run.stdout).group(1)

    from distributed import Client

    with Client(address, timeout=60) as client:
        study = _slow_study(0.3)
        # the bundle repo of a kept cluster is <state>/bundle-repo (printed in the docs)
        tasks = study.tasks(pack_study(study, state / "bundle-repo"), 40)
        futures = submit(client, tasks, study="interrupt")
        wait_for(lambda: sum(f.done() for f in futures) >= 4, 180, "the first results")
        worker_pids = set(client.run(os.getpid).values())
        warm = [p for p in run.alive() if p.ppid() in worker_pids]
        if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the foreground group
            os.killpg(run.popen.pid, sig)  # the CLI leads it (it was started in a session)
        else:  # kill, systemd, Kubernetes: the command alone
            run.popen.send_signal(sig)
        assert run.wait(120) == code, run.output
    assert "no process is left" in run.stderr
    assert warm, "the study ran no warm processes (nothing to check)"
    assert_nothing_left(run)


def test_scheduler_dying_ends_the_run_with_its_log_and_no_process_left(local_cli, local_env,
                                                                       tmp_path):
    run = local_cli.start(["-f", preset("debug-parallel").file, "--keep",
                           "--state-dir", tmp_path / "state"], local_env())
    run.wait_for_line("press Ctrl-C to stop it", 180)
    scheduler = next(p for p in run.alive() if "scheduler" in p.cmdline())
    scheduler.kill()
    assert run.wait(120) == 1, run.output
    assert "error: the local scheduler exited" in run.stderr and "scheduler.log" in run.stderr
    assert_nothing_left(run)


def test_scheduler_killed_mid_study_is_named_in_one_line(local_cli, local_env, tmp_path):
    """Before: the study waited forever for runs submitted to a client without a
    scheduler. Now `local` ends with one line naming the lost scheduler and its log."""
    study = tmp_path / "study.yaml"
    study.write_text(
        (STUDY / "study.yaml").read_text().replace("bundle: bundle", f"bundle: {STUDY / 'bundle'}")
        .replace("  days: 60\n", "  days: 60\n  sleep_s: 0.2\n"))
    run = local_cli.start(["-f", preset("fresh-process").file, "--study", study, "--sims", 400,
                           "--state-dir", tmp_path / "state", "--batch", 1], local_env())
    run.wait_for_line("study e2e-sir:", 180)
    wait_for(lambda: any("modelops-runner" in " ".join(p.cmdline()) for p in run.alive())
             or run.popen.poll() is not None, 180, "runs to start in warm processes",
             on_fail=lambda: run.output)
    schedulers = [p for p in run.alive() if "scheduler" in " ".join(p.cmdline())]
    assert schedulers, f"no scheduler process: {[p.cmdline() for p in run.alive()]}\n{run.output}"
    schedulers[0].kill()
    assert run.wait(120) == 1, run.output
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.output
    assert "error: the Dask scheduler tcp://" in errors[0] and " went away " in errors[0]
    assert "runs had finished" in errors[0] and "scheduler.log" in errors[0]
    assert_nothing_left(run)


def test_failing_sims_are_reported_apart_and_the_rest_aggregated(local_cli, local_env, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        (STUDY / "study.yaml").read_text().replace("bundle: bundle", f"bundle: {STUDY / 'bundle'}")
        .replace("  days: 60\n", "  days: 60\n  fail_seed: 103\n"))
    results = tmp_path / "results.json"
    run = local_cli.run(["-f", preset("fresh-process").file, "--study", study, "--sims", 20,
                         "--results", results, "--state-dir", tmp_path / "state",
                         "--no-progress"], local_env())
    assert run.popen.returncode == 1, run.output
    assert "sims: 19 ok, 1 failed" in run.stdout
    assert "seed 103 failed: SimulationError" in run.stdout and "on purpose" in run.stdout
    data = json.loads(results.read_text())
    assert [f["seed"] for f in data["failures"]] == [103]
    assert data["aggregate"]["outputs"]["sims"] == 19
    assert 103 not in [s["seed"] for s in data["sims"]]
    assert_nothing_left(run)
