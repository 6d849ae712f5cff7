"""`--results` and `--compare` as the debugging walkthrough uses them: a baseline in one mode,
the same study in another, seed by seed. What a user must be able to trust: NaN outputs
are kept and compare equal, a failure that comes and goes with the mode is a difference
(exit 3, the seed named, even though sims failed), a study where everything fails says
so, and a bad baseline is refused before anything starts."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import yaml

from e2e_support import CLI, STUDY, assert_nothing_left, preset
from modelops_runtime.local.compare.runs import load_baseline
from modelops_runtime.local.study.run import EXIT_DIFFERS, EXIT_FAILED

FIRST_SEED = 100   # sir_study/study.yaml
SIMS = 12


def write_study(tmp_path, name: str, **params) -> str:
    """The e2e study with extra params (see sirtest/model.py), as a study file in tmp_path."""
    data = yaml.safe_load((STUDY / "study.yaml").read_text())
    data["bundle"] = str(STUDY / "bundle")
    data["params"].update(params)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_study(local_cli, local_env, worker_image_site, tmp_path, preset_name: str, study: str,
              *, rc: int, results=None, compare=None):
    p = preset(preset_name)
    extra = ([] if results is None else ["--results", results]) + \
        ([] if compare is None else ["--compare", compare])
    run = local_cli.run(["-f", p.file, "--study", study, "--sims", SIMS, "--state-dir",
                         tmp_path / "state", "--no-progress", *extra],
                        local_env(direct=p.executor == "direct", site=worker_image_site))
    assert run.popen.returncode == rc, run.output
    assert_nothing_left(run)
    return run


def compare_lines(run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("compare:")]


def test_nan_outputs_are_kept_and_compare_equal_across_modes(local_cli, local_env,
                                                             worker_image_site, reference,
                                                             tmp_path):
    study = write_study(tmp_path, "nan", nan_every=4)
    base, again = tmp_path / "base.json", tmp_path / "again.json"
    run_study(local_cli, local_env, worker_image_site, tmp_path, "debug-isolated", study,
              rc=0, results=base)
    run = run_study(local_cli, local_env, worker_image_site, tmp_path, "prod-warm", study,
                    rc=0, results=again, compare=base)
    assert compare_lines(run) == [f"compare: all {SIMS} seeds give the same outputs as {base}"]

    # the files keep NaN and ±inf (JSON's NaN/Infinity tokens), never null
    for path in (base, again):
        assert "NaN" in path.read_text() and "-Infinity" in path.read_text()
        for s in json.loads(path.read_text())["sims"]:
            out = s["result"]["outputs"]
            if s["seed"] % 4 == 0:
                assert math.isnan(out["attack_rate"]), (path, s)
                assert out["growth"][:2] == [math.inf, -math.inf] and math.isnan(out["growth"][2])
            else:
                assert out == reference(s["seed"])

    # a results file from before the format field (NaN stored as null) is still read
    old = json.loads(base.read_text())
    del old["format"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_baseline(tmp_path / "old.json")
    assert loaded.format == 1 and sorted(loaded.outcomes) == [
        ("params", s) for s in range(FIRST_SEED, FIRST_SEED + SIMS)]


def test_failures_that_change_with_the_mode_are_differences_named_by_seed(
        local_cli, local_env, worker_image_site, tmp_path):
    # baseline: seeds 100, 105, 110 fail (every 5th)
    base = tmp_path / "base.json"
    run_study(local_cli, local_env, worker_image_site, tmp_path, "prod-warm",
              write_study(tmp_path, "every5", fail_every=5), rc=EXIT_FAILED, results=base)
    data = json.loads(base.read_text())
    assert {f["seed"]: f["error_type"] for f in data["failures"]} == {
        100: "SimulationError", 105: "SimulationError", 110: "SimulationError"}
    # as if seed 110 had crashed its process in the baseline, and seed 111 was never run
    data["failures"] = [dict(f, error_type="ProcessCrashedError") if f["seed"] == 110 else f
                        for f in data["failures"]]
    data["sims"] = [s for s in data["sims"] if s["seed"] != 111]
    # the same inputs as this run's study (only then are the runs comparable)
    data["inputs"]["sets"]["params"].update(fail_every=10, fail_seed=103)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))

    # this run: 100 and 110 fail (every 10th) and 103; so 105 is ok now
    run = run_study(local_cli, local_env, worker_image_site, tmp_path, "debug-isolated",
                    write_study(tmp_path, "every10", fail_every=10, fail_seed=103),
                    rc=EXIT_DIFFERS, compare=tampered)   # 3 wins over 1 (sims failed)
    assert "sims: 9 ok, 3 failed" in run.stdout
    lines = compare_lines(run)
    assert f"compare: 1 of 11 seeds ok in {tampered} failed in this run " \
           "(seeds 103 SimulationError)" in lines, run.output
    assert f"compare: 1 of 11 seeds failed in {tampered} but are ok in this run " \
           "(seeds 105 SimulationError)" in lines, run.output
    assert f"compare: 1 of 11 seeds failed with a different error than in {tampered} " \
           "(seeds 110 SimulationError, was ProcessCrashedError)" in lines, run.output
    assert f"compare: note: 1 seed(s) of this run are not in {tampered} (seeds 111); " \
           "compared the 11 both cover" in lines
    assert "compare: this mode changes the results" in lines
    assert not any("different outputs" in line for line in lines), run.output   # 100: same


def test_every_seed_failing_in_both_runs_says_so(local_cli, local_env, worker_image_site,
                                                 tmp_path):
    study = write_study(tmp_path, "all-fail", fail_every=1)
    base = tmp_path / "base.json"
    run_study(local_cli, local_env, worker_image_site, tmp_path, "debug-isolated", study,
              rc=EXIT_FAILED, results=base)
    assert len(json.loads(base.read_text())["failures"]) == SIMS
    run = run_study(local_cli, local_env, worker_image_site, tmp_path, "prod-warm", study,
                    rc=EXIT_FAILED, compare=base)
    assert compare_lines(run) == [
        f"compare: every one of the {SIMS} seeds failed in {base} and in this run, with the "
        "same error type (SimulationError): no outputs were compared; fix the failures first "
        "(see the failed seeds above)"], run.output
    assert "seed 100 failed: SimulationError" in run.stdout


def test_changed_inputs_are_refused_before_anything_starts(local_cli, local_env,
                                                           worker_image_site, tmp_path):
    """A changed param (or no seed in common) is not a mode difference: exit 2, one line
    naming it, nothing started."""
    base = tmp_path / "base.json"
    run_study(local_cli, local_env, worker_image_site, tmp_path, "debug-isolated",
              write_study(tmp_path, "plain"), rc=0, results=base)
    beta = yaml.safe_load((STUDY / "study.yaml").read_text())["params"]["beta"]
    data = yaml.safe_load((STUDY / "study.yaml").read_text())
    data.update(bundle=str(STUDY / "bundle"), first_seed=500)
    (tmp_path / "other-seeds.yaml").write_text(yaml.safe_dump(data))
    for study, line in [
        (write_study(tmp_path, "beta", beta=beta * 2),
         f"error: not comparable: param 'beta' differs: {beta!r} in {base}, {beta * 2!r} in "
         "this study; compare runs of the same study"),
        (str(tmp_path / "other-seeds.yaml"),
         f"error: not comparable: the runs share no seed: seeds 100..111 in {base}, seeds "
         "500..511 in this study; compare runs of the same study"),
    ]:
        run = local_cli.run(["-f", preset("prod-warm").file, "--study", study, "--sims", SIMS,
                             "--state-dir", tmp_path / "state2", "--no-progress",
                             "--compare", base], local_env())
        assert run.popen.returncode == 2, run.output
        assert run.stderr.strip().splitlines() == [line], run.output
        assert "scheduler:" not in run.stdout and not (tmp_path / "state2").exists()
        assert not run.alive()


@pytest.mark.parametrize("content,problem", [
    (None, "FileNotFoundError"),
    ("{not json", "JSONDecodeError"),
    ('{"values": []}', "(sims: Field required)"),
    ('{"format": 99, "sims": []}', "results file format 99 is not one this modelops-runtime "
                                   "reads (1..3)"),
], ids=["missing", "not-json", "no-sims", "newer-format"])
def test_a_bad_baseline_is_refused_before_anything_starts(content, problem, local_cli,
                                                          local_env, tmp_path):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    results = tmp_path / "results.json"
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", STUDY, "--compare", bad,
                         "--results", results, "--state-dir", tmp_path / "state"],
                        local_env(), timeout=60)
    assert run.popen.returncode == EXIT_FAILED, run.output
    assert run.stderr.startswith(f"error: --compare {bad}: "), run.output
    assert problem in run.stderr and "--results" in run.stderr, run.output
    assert "scheduler:" not in run.stdout
    assert not results.exists() and not (tmp_path / "state").exists()
    assert not run.alive()


def test_help_lists_the_exit_codes():
    out = subprocess.run([CLI, "local", "--help"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    codes = out.split("exit codes:", 1)[1]
    assert f"  {EXIT_DIFFERS}    --compare: a (set, seed) run's outputs differ, it failed in " \
           "only one of the\n       two" in codes
    assert f"(wins over {EXIT_FAILED})" in codes and "  2    bad command line" in codes
