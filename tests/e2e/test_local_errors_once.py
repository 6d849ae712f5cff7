"""Errors that hit every run of a study (issue #27): found before a cluster starts where the
bundle's files show them, otherwise printed once with the count of runs they hit; and no
word of a --results file nobody asked for.

- covers: `local` and `diagnose` refusing a misspelt entrypoint/aggregate function or
  module, or a module with a syntax error, in well under a cluster's start; a module that
  fails at import and a requirement that cannot resolve, each one line with its count
- see also: local/study/preflight.py, local/study/report.py
"""

from __future__ import annotations

import shutil

import pytest

from e2e_support import STUDY, assert_nothing_left, preset


def _study(tmp_path, *, study_edit=lambda t: t, files=None):
    """A copy of the e2e study (its bundle copied too), edited."""
    shutil.copytree(STUDY / "bundle", tmp_path / "bundle")
    for rel, text in (files or {}).items():
        (tmp_path / "bundle" / rel).write_text(text)
    path = tmp_path / "study.yaml"
    path.write_text(study_edit((STUDY / "study.yaml").read_text()))
    return path


MODEL = (STUDY / "bundle" / "sirtest" / "model.py").read_text()


@pytest.mark.parametrize("command", ["local", "diagnose"])
@pytest.mark.parametrize("case, edit, files, expected", [
    ("function", lambda t: t.replace("sirtest.model:simulate", "sirtest.model:simulat"), None,
     "entrypoint 'sirtest.model:simulat': module 'sirtest.model' ("),
    ("module", lambda t: t.replace("sirtest.model:simulate", "sirtest.modle:simulate"), None,
     "module 'sirtest.modle' is not in the bundle"),
    ("aggregate", lambda t: t.replace("sirtest.aggregate:peak_summary",
                                      "sirtest.aggregate:peak_sumary"), None,
     "aggregate 'sirtest.aggregate:peak_sumary'"),
    ("syntax", lambda t: t, {"sirtest/model.py": MODEL + "\ndef broken(:\n"},
     "cannot be imported: SyntaxError"),
    ("future", lambda t: t, {"sirtest/model.py": "import os\n" + MODEL},
     "cannot be imported: SyntaxError: from __future__ imports must occur"),
])
def test_a_wrong_entrypoint_is_refused_before_anything_starts(
        command, case, edit, files, expected, local_cli, local_env, tmp_path):
    study = _study(tmp_path, study_edit=edit, files=files)
    state = tmp_path / "state"
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", study, "--sims", 4,
                         "--state-dir", state], local_env(), timeout=60, command=command)
    assert run.popen.returncode == 1, run.output
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], run.output
    assert "nothing was started" in errors[0]
    if case in ("function", "aggregate"):
        assert "did you mean" in errors[0], errors[0]
    assert "helm template" not in run.stdout and "scheduler:" not in run.stdout, run.output
    assert not (state / "runs").exists() and not (state / "diagnose").exists()
    assert len(run.record.seen()) < 2, "a cluster process was started"
    assert not run.alive()


@pytest.mark.parametrize("case, files, expected", [
    ("import", {"sirtest/model.py": MODEL.replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\nimport nosuchlib_for_this_test\n")},
     "nosuchlib_for_this_test"),
    ("requirement", {"requirements.txt": "sirsteps==9.9.9\n"},
     "because there is no version of sirsteps==9.9.9"),
])
def test_an_error_every_run_hits_is_printed_once_with_its_count(
        case, files, expected, local_cli, local_env, tmp_path):
    study = _study(tmp_path, files=files)
    run = local_cli.run(["-f", preset("prod-warm").file, "--study", study, "--sims", 6,
                         "--state-dir", tmp_path / "state", "--no-progress"], local_env(),
                        timeout=300)
    assert run.popen.returncode == 1, run.output
    assert "sims: 0 ok, 6 failed" in run.stdout, run.output
    hits = [line for line in run.stdout.splitlines()
            if expected in line.lower() and "failed" in line]
    assert len(hits) == 1, run.output
    assert "all 6 sims failed with this error (seeds 100, 101, 102, 103, 104, … 1 more)" \
        in hits[0], hits[0]
    assert "--results file" not in run.output, run.output   # none was asked for
    assert_nothing_left(run)
