"""From the rendered chart to local processes: what is kept, what is rewritten, and every
bad input stopping before any process starts (real helm, real chart, real CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e_support import CHART, PRESETS, STUDY, preset
from modelops_runtime.local.cluster import launch as planning
from modelops_runtime.local.cluster import render
from modelops_runtime.errors import ChartRenderError, LocalModeError, ModelOpsError

POD_PATHS = ("/var/cache/modelops", "/var/lib/modelops")
# options the local mode owns (addresses, ports, scratch); everything else stays as rendered
REWRITTEN = {"--host", "--port", "--dashboard-address", "--scheduler-file", "--local-directory",
             "--listen-address", "--contact-address", "--interface", "--worker-port",
             "--nanny-port", "--pid-file"}


def _strip(args: list[str]) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in REWRITTEN:
            skip = True
            continue
        out.append(a)
    return out


@pytest.mark.parametrize("name", PRESETS)
def test_plan_keeps_the_rendered_spec_and_moves_pod_paths_under_the_state_dir(name, tmp_path):
    rendered = render.render_cluster([preset(name).file], chart=CHART)
    plan = planning.plan(rendered, tmp_path / "state", base_env={"PATH": os.environ["PATH"]})
    p = preset(name)
    assert (rendered.replicas, rendered.nworkers, rendered.nthreads) == \
        (p.replicas, p.processes, p.threads)
    assert len(plan.workers) == p.replicas
    assert plan.expected_workers == p.worker_processes

    worker = plan.workers[0]
    # command and args as rendered, except the scheduler address and the local-only options
    assert Path(worker.argv[0]).name == "dask"
    rendered_args = [planning.SCHEDULER_TOKEN if a.startswith("tcp://") else a
                     for a in rendered.worker.args]
    assert _strip(worker.argv[1:]) == _strip(rendered_args)
    assert render.get_opt(worker.argv, "--host") == "127.0.0.1"
    assert render.get_opt(worker.argv, "--dashboard-address") == "127.0.0.1:0"
    assert render.get_opt(plan.scheduler.argv, "--port") == "0"

    # env as rendered; pod volume paths now under the state dir; bundle repo is local
    state = str((tmp_path / "state").resolve())
    for key, value in rendered.worker.env.items():
        local = worker.env[key]
        if key == "MODELOPS_BUNDLE_REPO":
            assert local == str(plan.bundle_repo)
        elif value.startswith(POD_PATHS):
            assert local.startswith(state + "/volumes/"), (key, local)
        else:
            assert local == value, key
    assert not [v for v in worker.env.values() if v.startswith(POD_PATHS)]
    assert worker.env["TMPDIR"].startswith(state)
    assert plan.config.executor_type.value == p.executor


def test_shell_modelops_variables_never_reach_the_workers(tmp_path):
    """Only the values files configure the runtime, as in a pod."""
    rendered = render.render_cluster([preset("prod-warm").file], chart=CHART)
    plan = planning.plan(rendered, tmp_path, base_env={
        "PATH": os.environ["PATH"], "MODELOPS_EXECUTOR_TYPE": "direct",
        "MODELOPS_MAX_PROCES_REUSE": "1"})
    assert plan.config.executor_type.value == "isolated_warm"
    assert "MODELOPS_MAX_PROCES_REUSE" not in plan.workers[0].env
    assert any("MODELOPS_EXECUTOR_TYPE" in n and "values files" in n for n in plan.notices)


def test_memory_limit_beyond_this_machine_is_lifted_with_a_notice(tmp_path):
    rendered = render.render_cluster([preset("prod-warm").file], chart=CHART,
                                        sets=["worker.memoryPerProcess=4096Gi"])
    plan = planning.plan(rendered, tmp_path)
    assert render.get_opt(plan.workers[0].argv, "--memory-limit") == "0"
    assert any("--memory-limit 4096Gi" in n for n in plan.notices)
    kept = planning.plan(render.render_cluster([preset("prod-warm").file], chart=CHART),
                          tmp_path)
    assert render.get_opt(kept.workers[0].argv, "--memory-limit") == \
        render.get_opt(kept.rendered.worker.args, "--memory-limit")


def test_later_values_files_and_sets_win_like_helm(tmp_path):
    rendered = render.render_cluster(
        [preset("prod-warm").file, preset("debug-isolated").file], chart=CHART,
        sets=["worker.replicas=2"])
    plan = planning.plan(rendered, tmp_path)
    assert plan.config.executor_type.value == "direct"
    assert plan.expected_workers == 2 * preset("debug-isolated").processes
    names = {w.log.name for w in plan.workers}
    assert names == {"worker-0.log", "worker-1.log"}


@pytest.mark.parametrize("minimum,pods", [(0, 1), (1, 1), (3, 3)])
def test_an_autoscaled_release_runs_a_fixed_count_locally(minimum, pods, tmp_path):
    """No autoscaler runs locally: the pods the release keeps at least, one at least (a
    local study always has work). The scheduler keeps its rendered routes (the adaptive
    target); diagnose's steps, which set replicas and diagnosis modes the chart refuses to
    autoscale, render at the same count with the pinning sets."""
    sets = ["worker.autoscaling.enabled=true", f"worker.autoscaling.minReplicas={minimum}"]
    rendered = render.render_cluster([preset("prod-warm").file], chart=CHART, sets=sets)
    assert rendered.autoscaled and rendered.replicas == pods
    assert "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES" in rendered.scheduler.env
    plan = planning.plan(rendered, tmp_path)
    assert len(plan.workers) == pods
    assert plan.expected_workers == pods * preset("prod-warm").processes
    assert rendered.fixed_layout == ("worker.autoscaling.enabled=false", f"worker.replicas={pods}")
    step = render.render_cluster(
        [preset("prod-warm").file], chart=CHART,
        sets=[*sets, *rendered.fixed_layout, "mode=debug-isolated", "worker.replicas=1"])
    assert not step.autoscaled and step.replicas == 1 and step.fixed_layout == ()
    same = render.render_cluster([preset("prod-warm").file], chart=CHART,
                                 sets=[*sets, *rendered.fixed_layout])
    assert same.replicas == pods and same.worker == rendered.worker


def test_diagnose_runs_an_autoscaled_release_at_its_fixed_count(tmp_path):
    """diagnose's steps switch to the diagnosis modes and set worker.replicas, which the
    chart refuses with autoscaling: prepare() pins the release's local count, so every
    step renders (no step is started here)."""
    from modelops_runtime.local.diagnose import steps

    ctx = steps.prepare(STUDY, [preset("prod-warm").file],
                        ["worker.autoscaling.enabled=true", "worker.autoscaling.minReplicas=2"],
                        sims=2, chart=CHART, state_dir=tmp_path / "state",
                        out_dir=tmp_path / "out", say=lambda line: None)
    assert ctx.sets[-2:] == ["worker.autoscaling.enabled=false", "worker.replicas=2"]
    assert ctx.launch.expected_workers == 2 * preset("prod-warm").processes
    for step_sets in (steps.ONE_PROCESS + steps.DIRECT, steps.DIRECT, steps.FRESH_VENV,
                      steps.FRESH_PROCESS):
        rendered = render.render_cluster(ctx.values, [*ctx.sets, *step_sets], chart=CHART)
        assert not rendered.autoscaled
    assert "worker.replicas=2" in ctx.replay()


# -- bad input: a clear error, nothing started ------------------------------------------------

def _nothing_started(run, state: Path) -> None:
    assert run.popen.returncode == 1, run.output
    assert "scheduler:" not in run.stdout, "a cluster was started"
    assert not (state / "runs").exists(), "processes were started (their logs exist)"


def test_bad_values_stop_with_helms_schema_message(local_cli, local_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  executor:\n    type: warm\n")
    state = tmp_path / "state"
    run = local_cli.run(["-f", bad, "--study", STUDY, "--state-dir", state], local_env(),
                        timeout=120)
    _nothing_started(run, state)
    assert "/worker/executor/type" in run.stderr and "isolated_warm" in run.stderr, run.output
    assert "nothing was started" in run.stderr


@pytest.mark.parametrize("case", ["missing-values", "bad-study", "no-helm", "nothing-to-do",
                                  "direct-lacks-dependency", "bad-compare"])
def test_bad_input_is_reported_before_anything_starts(case, local_cli, local_env, tmp_path):
    state = tmp_path / "state"
    env = local_env()
    args = ["-f", preset("prod-warm").file, "--study", STUDY, "--state-dir", state]
    expected = {
        "missing-values": "values file",
        "bad-study": "study file",
        "no-helm": "MODELOPS_HELM",
        "nothing-to-do": "nothing to do",
        "direct-lacks-dependency": "lacks sirsteps==1.0",
        "bad-compare": "not a results file",
    }[case]
    if case == "missing-values":
        args[1] = tmp_path / "nope.yaml"
    elif case == "bad-study":
        (tmp_path / "study.yaml").write_text(
            f"bundle: {STUDY / 'bundle'}\nentrypoint: sirtest.model:simulate\nseeds: 3\n")
        args[3] = tmp_path / "study.yaml"
    elif case == "no-helm":
        env["MODELOPS_HELM"] = str(tmp_path / "no-such-helm")
    elif case == "nothing-to-do":
        args = args[:2]
    elif case == "direct-lacks-dependency":
        args[1] = preset("debug-isolated").file
    elif case == "bad-compare":
        (tmp_path / "old.json").write_text('{"sims": 3}')
        args += ["--compare", tmp_path / "old.json"]
    run = local_cli.run(args, env, timeout=120)
    if case == "nothing-to-do":
        assert run.popen.returncode == 2, run.output
    else:
        _nothing_started(run, state)
    assert expected in run.stderr, run.output
    assert "Traceback" not in run.stderr


def test_errors_are_typed(tmp_path):
    with pytest.raises(ChartRenderError) as err:
        render.render_cluster(sets=["worker.executor.type=warm"], chart=CHART)
    assert isinstance(err.value, ModelOpsError) and "isolated_warm" in err.value.helm_output
    with pytest.raises(LocalModeError, match="--chart"):
        render.find_chart(tmp_path)


@pytest.mark.parametrize("name", PRESETS)
def test_mode_value_selects_the_same_local_cluster_as_the_preset_file(name):
    """`modelops-runtime local --set mode=<preset>` (the chart ships the presets): the same
    rendered cluster as `-f values-examples/<preset>.yaml`."""
    by_file = render.render_cluster([preset(name).file], chart=CHART)
    by_mode = render.render_cluster([], sets=[f"mode={name}"], chart=CHART)
    assert by_mode == by_file
