"""pytest plugin: what each test needs beyond this machine's CPU, as markers, so that
``make test-fast`` (the complement of the marks below) is the edit-test loop.

- covers: ``apiserver`` (tests/cluster/apiserver and tests/cluster/autoscaling: a
  Kubernetes control plane, KEDA in the latter),
  ``container`` (tests/cluster/containers: the image built and run with podman),
  ``presets`` (local clusters of several presets one after another: every preset, compare,
  diagnose, the bench smoke run, the real models), ``cluster`` (the ``local`` command run
  end to end: a whole local cluster per test, often killed and resumed; `make run`'s
  log), ``slow`` (single tests measured at 30 s or more on two cores at load ~5, listed by
  name; ``@pytest.mark.slow`` in a heavy file too) and ``helm4`` (a chart test run again
  with helm 4: test-fast renders with helm 3 only); given here, in one place.
- does not: skip anything: ``make test`` runs every test whatever its marks.
- see also: pytest.ini (the markers), Makefile ``test-fast``, docs/contributing.md.
"""

from __future__ import annotations

import pytest

HEAVY = ("apiserver", "container", "presets", "cluster", "slow", "helm4")
BY_PATH = {
    "cluster/apiserver/": "apiserver",
    "cluster/autoscaling/": "apiserver",
    "cluster/containers/": "container",
    "e2e/test_local_presets.py": "presets",
    "e2e/test_local_compare.py": "presets",
    "e2e/test_diagnose.py": "presets",
    "e2e/test_readme_quickstart.py::test_every_other_block_runs_as_written": "presets",
    "realmodels/": "presets",
    "observability/test_bench_smoke.py::test_smoke_run": "presets",
    "observability/test_bench_smoke.py::test_sigterm_during_the_cluster": "presets",
    "e2e/test_local_lifecycle.py": "cluster",
    "e2e/test_local_results_store.py": "cluster",
    "e2e/test_local_sets.py": "cluster",
    "e2e/test_local_background.py": "cluster",
    "e2e/test_local_errors_once.py": "cluster",
    "e2e/test_local_volumes.py": "cluster",
    "e2e/test_make_run_log.py": "cluster",
    "e2e/test_local_s3.py": "cluster",
    "e2e/test_readme_s3.py": "cluster",
    # measured on two cores at load 5-20: ~100 s (a venv built for every task), ~115 s (a
    # graceful retirement waits out its timeouts), ~34 s and ~30 s (waits for stopped parts)
    "runtime/test_fresh_equivalence.py::test_every_bundle_observes_from_a_template_what_it_"
    "observes_from_exec[diagnose-fresh-venv]": "slow",
    "runtime/test_scale_down.py::test_sigterm_mid_study_retires_gracefully_and_every_run_has_"
    "one_result": "slow",
    "runtime/test_fresh_venvs_ahead.py::test_a_worker_stopped_mid_build_leaves_no_venv_or_uv":
        "slow",
    "runtime/test_warm_regressions.py::test_an_evicted_process_is_stopped_by_the_pool_and_"
    "reached_by_shutdown": "slow",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        nodeid = item.nodeid.removeprefix("tests/")
        for prefix, mark in BY_PATH.items():
            if nodeid.startswith(prefix):
                item.add_marker(getattr(pytest.mark, mark))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("helm") == "helm4":
            item.add_marker(pytest.mark.helm4)
