"""Local mode creates what a pod would have: every emptyDir of worker.extraVolumes exists
for the local workers (issue #23: the documented workaround of a numba cache volume died
with FileNotFoundError because <state>/volumes/<name> was never created), and a
worker.executor.writablePaths entry reaches the model both as the volume's local directory
and as the path itself (the refused-write message advises `writablePaths={/tmp}`: it must
then let the model write /tmp)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e_support import CHART, assert_nothing_left, preset
from modelops_runtime.local.cluster import launch as planning
from modelops_runtime.local.cluster import render
from modelops_runtime.errors import LocalModeError

MODEL = '''
import os


def simulate(params, seed):
    where = os.environ["MY_CACHE"]
    with open(os.path.join(where, f"seed-{seed}.txt"), "w") as f:
        f.write(str(seed))
    return {"files": len(os.listdir(where))}
'''

VALUES = {"worker": {
    "extraVolumes": [{"name": "mycache", "emptyDir": {}},
                     {"name": "config", "configMap": {"name": "not-local"}}],
    "extraVolumeMounts": [{"name": "mycache", "mountPath": "/var/cache/mine"}],
    "extraEnv": [{"name": "MY_CACHE", "value": "/var/cache/mine"}],
    "executor": {"envPassthrough": ["MY_CACHE"], "writablePaths": ["/var/cache/mine"]}}}


def test_the_plan_knows_which_mounted_volumes_are_empty_dirs(tmp_path):
    values = tmp_path / "volumes.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    rendered = render.render_cluster([preset("prod-warm").file, values], chart=CHART)
    assert "mycache" in rendered.worker.empty_dirs
    assert "config" not in rendered.worker.empty_dirs  # not mounted, and not an emptyDir
    plan = planning.plan(rendered, tmp_path / "state")
    assert plan.workers[0].env["MY_CACHE"] == str(tmp_path.resolve() / "state" / "volumes" / "mycache")


def test_an_extra_empty_dir_exists_for_the_local_workers(local_cli, local_env, tmp_path):
    bundle = tmp_path / "study" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "cachewriter.py").write_text(MODEL)
    (tmp_path / "study" / "study.yaml").write_text(yaml.safe_dump(
        {"name": "volumes", "bundle": "bundle", "entrypoint": "cachewriter:simulate",
         "params": {}, "sims": 4}))
    values = tmp_path / "volumes.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    state = tmp_path / "state"
    run = local_cli.run(["-f", preset("prod-warm").file, "-f", values, "--study",
                         tmp_path / "study", "--state-dir", state, "--no-progress"],
                        local_env(), timeout=300)
    assert run.popen.returncode == 0, run.output
    assert "sims: 4 ok, 0 failed" in run.stdout, run.output
    assert sorted(p.name for p in (state / "volumes" / "mycache").iterdir()) == \
        [f"seed-{s}.txt" for s in range(4)]
    assert_nothing_left(run)


FIXED = '''
import os


def simulate(params, seed):
    with open(os.path.join(params["where"], "checkpoint.txt"), "w") as f:  # a fixed path
        f.write(str(seed))
    return {"seed": seed}
'''


def _plan(tmp_path, state: Path, *sets: str):
    values = tmp_path / "volumes.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    rendered = render.render_cluster([preset("prod-warm").file, values], sets, chart=CHART)
    return planning.plan(rendered, state)


def test_writable_paths_given_with_set_are_writable_as_themselves_and_as_volumes(tmp_path):
    """`--set worker.executor.writablePaths={/tmp,/var/cache/mine}`: in a pod, /tmp and
    /var/cache/mine are volumes; here a model opening /tmp/x reaches this machine's /tmp, a
    model following MY_CACHE reaches <state>/volumes/mycache: both are granted (before, a
    one-path list was only rewritten to <state>/volumes/tmp, and a longer one not at all)."""
    state = Path("/var/lib/modelops-writes-test-state")  # outside /tmp; plan() makes nothing
    plan = _plan(tmp_path, state, "worker.executor.writablePaths={/tmp,/var/cache/mine}")
    assert plan.workers[0].env["MODELOPS_WARM_WRITABLE_PATHS"] == ",".join([
        f"{state}/volumes/tmp", "/tmp", f"{state}/volumes/mycache", "/var/cache/mine"])
    assert [str(p) for p in plan.config.warm_writable_paths] == \
        plan.workers[0].env["MODELOPS_WARM_WRITABLE_PATHS"].split(",")  # valid as a value
    assert not state.exists()


@pytest.mark.parametrize("path", ["/tmp", "parent of the state directory"])
def test_a_writable_path_holding_the_caches_is_refused_in_one_line(tmp_path, path):
    """Locally /tmp holds a state directory under /tmp (its bundle and venv caches; in a
    pod it holds neither): tasks never write there, so the plan refuses. (A path holding
    the pod's caches, /var/cache/modelops, the chart refuses: test_chart_bad_values.py.)"""
    state = tmp_path / "state"
    path = path if path.startswith("/") else str(tmp_path)
    with pytest.raises(LocalModeError) as info:
        _plan(tmp_path, state, f"worker.executor.writablePaths={{{path}}}")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"worker.executor.writablePaths has {path}, which on this "
                              "machine is, holds or lies in "), message
    assert "never writable by tasks" in message and "--state-dir" in message, message
    assert not state.exists()


def test_a_model_writes_a_fixed_path_its_writable_volume_allows(local_cli, local_env, tmp_path):
    """A real `local` run: the volume mounted at a path that exists here, listed in
    writablePaths, and a model writing a fixed file there by that path (as one writing
    /tmp/checkpoint.txt with writablePaths={/tmp} does). Before: every sim failed with
    "writing .../checkpoint.txt was refused", the sandbox allowing <state>/volumes/fixed."""
    where = tmp_path / "fixed"  # the pod's mount point, as it exists on this machine
    where.mkdir()
    bundle = tmp_path / "study" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "fixedpath.py").write_text(FIXED)
    (tmp_path / "study" / "study.yaml").write_text(yaml.safe_dump(
        {"name": "fixedpath", "bundle": "bundle", "entrypoint": "fixedpath:simulate",
         "params": {"where": str(where)}, "sims": 2}))
    values = tmp_path / "fixed.yaml"
    values.write_text(yaml.safe_dump({"worker": {
        "extraVolumes": [{"name": "fixed", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "fixed", "mountPath": str(where)}]}}))
    state = tmp_path / "state"
    run = local_cli.run(["-f", preset("prod-warm").file, "-f", values, "--set",
                         f"worker.executor.writablePaths={{{where}}}", "--study",
                         tmp_path / "study", "--state-dir", state, "--no-progress"],
                        local_env(), timeout=300)
    assert run.popen.returncode == 0, run.output
    assert "sims: 2 ok, 0 failed" in run.stdout, run.output
    assert (where / "checkpoint.txt").read_text() in ("0", "1")
    assert_nothing_left(run)
