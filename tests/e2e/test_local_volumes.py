"""Local mode creates what a pod would have: every emptyDir of worker.extraVolumes exists
for the local workers (issue #23: the documented workaround of a numba cache volume died
with FileNotFoundError because <state>/volumes/<name> was never created)."""

from __future__ import annotations

import yaml

from e2e_support import CHART, assert_nothing_left, preset
from modelops_runtime.local.cluster import launch as planning
from modelops_runtime.local.cluster import render

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
