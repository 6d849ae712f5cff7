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
        "native threads: 1 per task (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, "
        "...), up to 1 × 1 × 1 = 1 per pod (processes × threads × nativeThreads)",
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
        "native threads: 1 per task (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, "
        "...), up to 4 × 1 × 1 = 4 per pod (processes × threads × nativeThreads)",
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


def test_notes_show_native_threads_per_task_and_per_pod():
    """worker.executor.nativeThreads (MODELOPS_NATIVE_THREADS) next to the executor lines,
    with how many native threads a pod may start at once, in either executor."""
    for executor in ("isolated_warm", "direct"):
        text = _notes(values=f"worker: {{processes: 2, threads: 3, executor: {{type: {executor}, "
                             "nativeThreads: 4}}")
        lines = [line.strip() for line in text.splitlines()]
        native = next(i for i, line in enumerate(lines) if line.startswith("native threads:"))
        assert lines[native - 2].startswith("executor:       " + executor), text
        assert lines[native] == (
            "native threads: 4 per task (OMP_NUM_THREADS, MKL_NUM_THREADS, "
            "OPENBLAS_NUM_THREADS, ...), up to 2 × 3 × 4 = 24 per pod (processes × threads × "
            "nativeThreads)"), text


def test_notes_show_an_explicit_memory_limit():
    assert "(limit set explicitly: 20Gi)" in _notes(
        values="worker: {resources: {limits: {memory: 20Gi}}}")


def test_notes_give_the_upgrade_line_of_every_preset():
    text = _notes()
    for preset in PRESETS:
        assert (f"helm upgrade mo ./chart -n sims --reuse-values --set mode={preset} ") in text, \
            preset
    assert "helm test mo -n sims" in text
    assert "port-forward svc/mo-modelops-dask-scheduler 8786:8786 8787:8787" in text


def test_notes_upgrade_lines_roll_a_failed_upgrade_back():
    """helm 4's --rollback-on-failure (helm 3's --atomic: tests/cluster/apiserver, where
    helm 3 renders NOTES against a real API server) on every upgrade line."""
    text = _notes()
    lines = [line for line in text.splitlines() if line.strip().startswith("helm upgrade mo")]
    assert len(lines) == len(PRESETS)
    assert all(" --rollback-on-failure " in line for line in lines), lines
    assert "--rollback-on-failure rolls a failed upgrade back as a whole" in text


def test_notes_say_where_the_workers_get_bundles():
    assert "bundles:        s3://modelops-tests/bundles (fetched by the workers through fsspec)" \
        in _notes()
    text = _notes(values="bundles: {repo: /mnt/repo, volume: {nfs: {server: nas, path: /b}}}")
    assert "bundles:        /mnt/repo (volume nfs, mounted read-only)" in text


def test_notes_give_helm_test_a_timeout_beyond_the_scripts_own():
    assert "helm test mo -n sims    # a task on every worker process" in _notes()
    assert "helm test mo -n sims --timeout 660s    #" in _notes(values="tests: {timeoutSeconds: 600}")


# ---- the effective mode -------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_notes_name_the_mode_of_a_preset_file_or_a_mode_value(preset):
    for text in (_notes(preset), _notes(values=f"mode: {preset}")):
        assert f"mode:           {preset} (the preset)" in text
        assert "WARNING" not in text


def test_notes_warn_when_a_preset_file_before_the_users_values_mixes_modes():
    """-f values-examples/fresh-process.yaml -f mine.yaml, where mine sets threads: the
    effective mode is fresh-process's keys plus threads=2, which is no preset."""
    text = _notes("fresh-process", values="worker: {threads: 2}")
    assert ("mode:           custom: fresh-process with worker.threads=2 (preset: 1) "
            "(matches no preset)") in text
    assert ("WARNING: the effective mode matches no preset: mode=fresh-process, but "
            "worker.threads=2 (preset: 1) set explicitly (explicit mode keys win over mode). If "
            "you did not mean to mix modes (e.g. a preset file passed with -f before your own "
            "values), remove those keys: helm upgrade mo <chart> --reset-values -f my-values.yaml "
            "--set mode=fresh-process.") in text


def test_notes_warn_when_kept_preset_keys_override_a_new_mode():
    """Installed with -f values-examples/debug-isolated.yaml, upgraded with --reuse-values
    --set mode=fresh-process: the kept keys win, and NOTES says so."""
    text = _notes("debug-isolated", values="mode: fresh-process")
    assert ("mode:           debug-isolated (the preset's keys set explicitly; "
            "mode=fresh-process)") in text
    assert ("WARNING: mode=fresh-process, but the effective mode is the debug-isolated preset: "
            "worker.processes=1 (preset: 4), worker.executor.maxProcessReuse=1000 (preset: 1), "
            "worker.executor.type=direct (preset: isolated_warm) set explicitly") in text
    assert "--reset-values -f my-values.yaml --set mode=fresh-process." in text


# ---- legal but surely unintended: WARNING lines ------------------------------------------

def test_notes_warn_about_a_pod_bigger_than_most_nodes():
    text = _notes(values="worker: {memoryPerProcess: 512Mi, executor: {poolMemoryPerProcess: 64Gi}}")
    assert ("WARNING: each worker pod asks for 264704Mi (258.5 GiB) of memory (4 processes × "
            "(512Mi memoryPerProcess + 65536Mi poolMemoryPerProcess) + 512Mi memoryOverhead = "
            "264704Mi): few nodes have that much, so the pods may stay Pending.") in text


def test_notes_warn_only_above_128_gib():
    # 4 × (1024Mi + 31232Mi) + overhead: 131072Mi (128 GiB) exactly is fine, 1Mi more warns
    assert "WARNING" not in _notes(
        values="worker: {memoryOverhead: 2048Mi, executor: {poolMemoryPerProcess: 31232Mi}}")
    assert "WARNING: each worker pod asks for 131073Mi (128.0 GiB)" in _notes(
        values="worker: {memoryOverhead: 2049Mi, executor: {poolMemoryPerProcess: 31232Mi}}")


def test_notes_warn_about_threads_with_the_direct_executor():
    text = _notes("debug-parallel", values="worker: {threads: 4}")
    assert ("WARNING: worker.executor.type=direct runs one task at a time per Dask worker "
            "process, but worker.threads=4: each pod requests 16 CPUs (processes × threads) of "
            "which at most 4 are busy. Set worker.threads: 1 (as the debug presets do), or use "
            "isolated_warm to run tasks in parallel.") in text


def test_notes_warn_about_root_workers():
    text = _notes(values="podSecurityContext: {runAsUser: 0, runAsNonRoot: false}")
    assert ("WARNING: the worker pods run as root (runAsUser: 0): bundle code, which is user "
            "code, runs as root in the container.") in text
    assert "WARNING" not in _notes(
        values="worker: {podSecurityContext: {runAsUser: 20000}}")


def test_notes_name_the_dashboard_ingress():
    text = _notes(values="scheduler: {ingress: {enabled: true, hosts: [dask.example.com], "
                         "tls: [{hosts: [dask.example.com], secretName: t}]}}")
    assert "dashboard:      Ingress mo-modelops-dask-scheduler (dask.example.com/, TLS)" in text
    assert "WARNING" not in text


def test_notes_warn_when_the_network_policy_keeps_the_ingress_controller_out():
    values = "scheduler: {ingress: {enabled: true}}\nnetworkPolicy: {enabled: true}"
    assert ("WARNING: scheduler.ingress is enabled, but networkPolicy.enabled admits no client "
            "to the scheduler (networkPolicy.clientFrom is empty): the ingress controller cannot "
            "reach the dashboard.") in _notes(values=values)
    allowed = ("scheduler: {ingress: {enabled: true}}\nnetworkPolicy: {enabled: true, "
               "clientFrom: [{namespaceSelector: {matchLabels: {team: x}}}]}")
    assert "WARNING" not in _notes(values=allowed)


DIRECT_NOTE = ("NOTE: worker.executor.type=direct runs every task in the Dask worker's own "
               "Python\nenvironment, not in a venv built from the bundle's requirements")


@pytest.mark.parametrize("preset", PRESETS)
def test_direct_presets_say_the_model_dependencies_must_be_in_the_image(preset):
    """debug-isolated and debug-parallel run bundles without a venv: the NOTES say the
    image must hold the model's packages, name the image and how to add them."""
    text = _notes(preset)
    direct = preset in ("debug-isolated", "debug-parallel")
    assert (DIRECT_NOTE in text) == direct, text
    if direct:
        assert "must already be installed in the worker\nimage, modelops-dask:0.1.0." in text
        assert '--build-arg EXTRA_PACKAGES="<the model\'s requirements>"' in text


def test_direct_note_follows_an_explicit_executor_type():
    assert DIRECT_NOTE in _notes(values="worker: {executor: {type: direct}}")
    assert DIRECT_NOTE not in _notes("debug-parallel", values="worker: {executor: "
                                                               "{type: isolated_warm}}")
