"""NOTES.txt tells the user the mode they got and how to switch it.

`helm template` never renders NOTES.txt and helm 3.22's `install --dry-run=client` still
checks that a cluster is reachable (only `helm template` sets client-only mode), so NOTES
are rendered with helm 4's `install --dry-run=client`, which needs no cluster.
"""

from __future__ import annotations

import pytest

from chartkit import PRESETS, notes

MODE_LINES = {
    "debug-isolated": [
        "workers:        1 pod(s) × 1 processes × 1 thread(s) = 1 Dask worker processes, 1 threads",
        "executor:       direct (tasks run inside the Dask worker processes: no warm processes, "
        "no venvs)",
        "warm processes: 0",
        "memory per pod: 1 processes × (1024Mi memoryPerProcess + 0Mi warm pool (direct)) + "
        "512Mi memoryOverhead = 1536Mi",
    ],
    "debug-parallel": [
        "workers:        1 pod(s) × 4 processes × 1 thread(s) = 4 Dask worker processes, 4 threads",
        "warm processes: 0",
        "= 4608Mi",
    ],
    "prod-warm": [
        "executor:       isolated_warm (fresh venv per task: false, process reuse: 1000 tasks, "
        "ttl: 3600s, validate deps: true)",
        "warm processes: 1 × 4 × 8 (replicas × processes × maxWarmProcesses) = 32 in total",
        "memory per pod: 4 processes × (1024Mi memoryPerProcess + 2048Mi poolMemoryPerProcess) + "
        "512Mi memoryOverhead = 12800Mi",
    ],
    "diagnose-fresh-venv": ["isolated_warm (fresh venv per task: true, process reuse: 1000 tasks"],
    "fresh-process": ["isolated_warm (fresh venv per task: false, process reuse: 1 tasks"],
}


def _notes(*files, values=None) -> str:
    out = notes("helm4", *files, values=values)
    assert out.returncode == 0, out.stderr
    assert "NOTES:" in out.stdout
    return out.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize("preset", PRESETS)
def test_notes_print_the_mode(preset):
    text = _notes(preset)
    for line in MODE_LINES[preset]:
        assert line in text, f"{line!r} not in NOTES:\n{text}"


def test_notes_count_warm_processes_over_all_replicas():
    text = _notes(values="worker: {replicas: 3, processes: 2, executor: {maxWarmProcesses: 16}}")
    assert "warm processes: 3 × 2 × 16 (replicas × processes × maxWarmProcesses) = 96 in total" \
        in text
    assert "3 pod(s) × 2 processes × 1 thread(s) = 6 Dask worker processes, 6 threads" in text


def test_notes_show_an_explicit_memory_limit():
    assert "(limit set explicitly: 20Gi)" in _notes(
        values="worker: {resources: {limits: {memory: 20Gi}}}")


def test_notes_give_the_upgrade_line_of_every_preset():
    text = _notes()
    for preset in PRESETS:
        assert (f"helm upgrade mo ./chart -n sims -f my-values.yaml "
                f"-f values-examples/{preset}.yaml") in text, preset
    assert "helm test mo -n sims" in text
    assert "port-forward svc/mo-modelops-dask-scheduler 8786:8786 8787:8787" in text


def test_notes_say_where_the_workers_get_bundles():
    assert "bundles:        s3://modelops-tests/bundles (fetched by the workers through fsspec)" \
        in _notes()
    text = _notes(values="bundles: {repo: /mnt/repo, volume: {nfs: {server: nas, path: /b}}}")
    assert "bundles:        /mnt/repo (volume nfs, mounted read-only)" in text


def test_notes_give_helm_test_a_timeout_beyond_the_scripts_own():
    assert "helm test mo -n sims    # a task on every worker process" in _notes()
    assert "helm test mo -n sims --timeout 660s    #" in _notes(values="tests: {timeoutSeconds: 600}")
