"""The study ``modelops-runtime local --study`` runs (see runtime/examples/sir/README.md):
the study file (studyfile.py, its sets: sets.py), its bundle packed into the cluster's
bundle repo, the seeded runs of every set and the aggregations submitted through the client
API, and the report — aggregates, pool stats, failures, the ``--results`` file and the
``--compare`` check (compare.py) against an earlier one.

Nothing here starts or stops processes: it runs on any Dask client (``command`` hands it
the local cluster's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...exitcodes import EXIT_DIFFERS, EXIT_FAILED, EXIT_INPUTS_DIFFER, EXIT_OK
from ...errors import LocalModeError
from ...models import SimResult
from ..compare.runs import InputsDiffer, compare_runs, same_mode
from ..cluster.launch import LaunchPlan
from ..console import Echo
from ..results import (FailureRecord, RunView, SetAggregate, SimRecord, StudyRun,
                      results_document, view_of)
from .studyfile import STUDY_FILE, Study

__all__ = ["STUDY_FILE", "Study", "pack_study",
           "run_and_report", "run_study", "run_study_stored"]




def pack_study(study: Study, repo: Path | str,
               repo_env: Mapping[str, str] | None = None) -> str:
    """Pack the study's bundle into ``repo``; ``repo_env``: the workers' AWS_* variables
    for a URL repository (LaunchPlan.bundle_env), else this process's environment."""
    from ...bundles import pack

    return pack(study.bundle, str(repo), environ=repo_env or None)


def run_study(client, study: Study, bundle_repo: Path | str, *, sims: int | None = None,
              repo_env: Mapping[str, str] | None = None, progress: bool = True,
              window: int | None = None, batch: int | None = None,
              batch_target: float | None = None) -> StudyRun:
    """Pack the study's bundle, run every (set, seed) with a progress bar (submitted in a
    bounded window), then each set's aggregation over its successful runs (failures are
    reported apart, never hidden) and the one across sets."""
    from ...client import (BATCH_TARGET, DEFAULT_WINDOW, gather_study, package_sets,
                          submit_study)
    from ...client.broadcast import run_answered

    started = time.perf_counter()
    ref = pack_study(study, bundle_repo, repo_env)
    plan = study.plan(ref, sims)
    submission = submit_study(client, plan, window=window or DEFAULT_WINDOW, batch=batch,
                              batch_target=batch_target or BATCH_TARGET)
    outcome = gather_study(client, submission, progress=progress, desc=study.name)
    records = [SimRecord(set=s.set.id, seed=seed, result=r)
               for s in outcome.sets for seed, r in sorted(s.results.items())]
    failures = [FailureRecord(set=f.set_id, seed=f.seed, error_type=f.error_type,
                              message=f.message) for f in outcome.failures]
    single = plan.set_count == 1
    if single:
        only = outcome.sets[0]
        agg, agg_error, per_set = only.aggregate, only.aggregate_error, []
        if only.aggregate_error and not only.results:
            agg_error = None          # every sim failed: the failures say it all
    else:
        agg, agg_error = outcome.across, outcome.across_error
        per_set = [SetAggregate(set_id=s.set.id, runs=len(s.results), failed=len(s.failures),
                                aggregate=s.aggregate, aggregate_error=s.aggregate_error)
                   for s in outcome.sets]
    nthreads = dict(client.nthreads())
    worker_pids = dict(run_answered(client, os.getpid))
    used = {r.result.env_digest for r in records} | ({agg.env_digest} if agg else set())
    used |= {a.aggregate.env_digest for a in per_set if a.aggregate is not None}
    environments = {d: p for d, p in package_sets(client).items() if d in used}
    elapsed = time.perf_counter() - started
    return StudyRun(study=study.name, bundle=ref, sims=records, failures=failures,
                    aggregate=agg, aggregate_error=agg_error,
                    param_sets=[s.set for s in outcome.sets], set_aggregates=per_set,
                    nthreads=nthreads, worker_pids=worker_pids, environments=environments,
                    inputs=study.inputs(ref, sims),
                    pool_stats=pool_stats(client, [r.result for r in records]),
                    elapsed_s=elapsed, dask_tasks=submission.tasks,
                    batch_plan=submission.batching.describe() if submission.batching else "")


def run_study_stored(client, study: Study, bundle_repo: Path | str, url: str, echo: Echo, *,
                     sims: int | None = None, repo_env: Mapping[str, str] | None = None, progress: bool = True, window: int | None = None,
                     batch: int | None = None, batch_target: float | None = None,
                     retry_failed: bool = False) -> StudyRun:
    """:func:`run_study` with the runs streamed to the results store ``url`` (only the
    ones it lacks run), then read back from it for the report, --results and --compare."""
    from ...client import BATCH_TARGET, DEFAULT_WINDOW, package_sets, submit_study
    from ...client.broadcast import run_answered
    from ...client.stored import gather_stored, resume_line

    started = time.perf_counter()
    ref = pack_study(study, bundle_repo, repo_env)
    plan = study.plan(ref, sims)
    sub = submit_study(client, plan, window=window or DEFAULT_WINDOW, batch=batch,
                       batch_target=batch_target or BATCH_TARGET, store=url,
                       retry_failed=retry_failed)
    for note in sub.store.notes:
        echo(f"results store: {note}")
    line = resume_line(sub)
    if line:
        echo(line)
    outcome = gather_stored(client, sub, progress, study.name, announce=False)
    store = sub.store
    echo(f"results store: {url} ({outcome.ok + outcome.failed:,} of {plan.run_count:,} runs, "
         f"{len(store.manifest.parts)} part(s); this session ran {outcome.ran:,})")
    records, failures = [], []
    table = store.table().sort_by([("set_index", "ascending"), ("seed", "ascending")])
    for batch_ in table.to_batches():
        for r in batch_.to_pylist():
            if r["ok"]:
                records.append(SimRecord(set=r["set_id"], seed=r["seed"], result=SimResult(
                    outputs=json.loads(r["outputs"]), executor=r["executor"], pid=r["pid"],
                    process_task_count=r["process_task_count"],
                    venv_cache_hit=r["venv_cache_hit"], duration_s=r["duration_s"],
                    worker=r["worker"] or "", env_digest=r["env_digest"] or "")))
            else:
                failures.append(FailureRecord(set=r["set_id"], seed=r["seed"],
                                              error_type=r["error_type"],
                                              message=r["error_message"] or ""))
    sets = list(plan.iter_sets())
    if plan.set_count == 1:
        only = outcome.sets[0]
        agg, agg_error, per_set = only.aggregate, only.aggregate_error, []
        if only.aggregate_error and not only.ok:
            agg_error = None
    else:
        agg, agg_error = outcome.across, outcome.across_error
        per_set = [SetAggregate(set_id=s.set_id, runs=s.ok, failed=s.failed,
                                aggregate=s.aggregate, aggregate_error=s.aggregate_error)
                   for s in outcome.sets]
    used = {r.result.env_digest for r in records} | ({agg.env_digest} if agg else set())
    used |= {a.aggregate.env_digest for a in per_set if a.aggregate is not None}
    return StudyRun(study=study.name, bundle=ref, sims=records, failures=failures,
                    aggregate=agg, aggregate_error=agg_error, param_sets=sets,
                    set_aggregates=per_set, nthreads=dict(client.nthreads()),
                    worker_pids=dict(run_answered(client, os.getpid)),
                    environments={d: p for d, p in package_sets(client).items() if d in used},
                    inputs=study.inputs(ref, sims),
                    pool_stats=pool_stats(client, [r.result for r in records]),
                    elapsed_s=time.perf_counter() - started, dask_tasks=outcome.dask_tasks)


def pool_stats(client, results: Sequence[SimResult]) -> dict[str, Any]:
    """How the sims were executed: processes used and their reuse, venv cache hits (from
    the results' metadata), plus the warm pools' own counters summed over the cluster."""
    per_pid: dict[int, int] = {}
    for r in results:
        per_pid[r.pid] = max(per_pid.get(r.pid, 0), r.process_task_count)
    hits = [r.venv_cache_hit for r in results if r.venv_cache_hit is not None]
    out: dict[str, Any] = {
        "executor": ",".join(sorted({r.executor for r in results})) or "-",
        "processes_used": len(per_pid),
        "max_tasks_in_one_process": max(per_pid.values(), default=0),
    }
    if hits:
        out["venv_cache_hits"] = sum(hits)
        out["venv_cache_misses"] = len(hits) - sum(hits)
    if any(r.executor == "isolated_warm" for r in results):
        from ...client.cluster_stats import cluster_stats

        out["pool"] = cluster_stats(client).total.model_dump()
    return out


def format_pool_stats(stats: Mapping[str, Any]) -> str:
    line = (f"executor={stats['executor']}, {stats['processes_used']} process(es) ran the "
            f"sims, at most {stats['max_tasks_in_one_process']} in one")
    if "venv_cache_hits" in stats:
        line += (f"; venv cache hits {stats['venv_cache_hits']}, "
                 f"misses {stats['venv_cache_misses']}")
    pool = stats.get("pool")
    if pool:
        removals = ", ".join(f"{k}={v}" for k, v in pool["removals"].items() if v) or "none"
        line += (f"\n  warm pool (all workers): tasks={pool['tasks']} spawns={pool['spawns']} "
                 f"reuses={pool['reuses']} venv builds={pool['venv_builds']} "
                 f"({pool['venv_build_seconds']:.1f} s) alive={pool['size']} "
                 f"rss={pool['rss_bytes'] / 2**20:.0f} MiB; removals: {removals}")
        if pool.get("venv_invalid"):
            line += (f"; cached venvs rebuilt because they had changed since their build: "
                     f"{pool['venv_invalid']} (the worker log names what changed)")
        fallbacks = {k: v for k, v in pool.get("template_fallbacks", {}).items() if v}
        if fallbacks:
            line += ("; template fallbacks (exec'd instead of forked): "
                     + ", ".join(f"{k}={v}" for k, v in fallbacks.items()))
    return line


# ---------------------------------------------------------------------------------
# executor=direct runs bundle code in the worker's own environment
# ---------------------------------------------------------------------------------

_CHECK_DEPS = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
missing = []
for line in json.loads(sys.argv[1]):
    req = Requirement(line)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        missing.append(line); continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        missing.append(f"{line} (have {have})")
print(json.dumps(missing))
"""


def missing_direct_dependencies(study: Study, launch: LaunchPlan) -> list[str]:
    """The bundle's requirements that the worker environment of ``launch`` lacks (or has in
    a version outside the requirement), checked with the workers' own interpreter and
    environment; [] for executor isolated_warm (the bundle gets its own venv)."""
    from ...bundles import read_dependencies
    from ...config import ExecutorType

    if launch.config.executor_type is not ExecutorType.direct or not launch.workers:
        return []
    deps = read_dependencies(study.bundle)
    if not deps:
        return []
    proc = subprocess.run([sys.executable, "-c", _CHECK_DEPS, json.dumps(deps)],
                          env=launch.workers[0].env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LocalModeError(f"cannot check the bundle's dependencies: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def direct_install_hint(study: Study, missing: Sequence[str]) -> str:
    """The command that installs ``missing`` where local direct workers run."""
    req = study.bundle / "requirements.txt"
    return (f"{Path(sys.executable).parent / 'pip'} install -r {req}" if req.is_file()
            else f"{Path(sys.executable).parent / 'pip'} install {' '.join(missing)}")


def check_direct_dependencies(study: Study, launch: LaunchPlan) -> None:
    """With executor=direct the bundle's dependencies must already be installed where the
    worker runs (its image; locally: this environment). Checked before anything starts, so
    the user gets one clear line instead of 300 failed sims."""
    missing = missing_direct_dependencies(study, launch)
    if missing:
        how = direct_install_hint(study, missing)
        raise LocalModeError(
            f"executor=direct runs the bundle inside the Dask worker process, whose "
            f"environment lacks {', '.join(missing)}; nothing was started. Install them "
            f"there (`{how}`; on Kubernetes: into the worker image) or use a preset with "
            "executor isolated_warm, which builds the bundle's own venv")


# ---------------------------------------------------------------------------------
# the report: what the user reads, the --results file, the --compare check
# ---------------------------------------------------------------------------------

def run_and_report(client, study: Study, launch: LaunchPlan, echo: Echo, *,
                   sims: int | None = None, progress: bool = True,
                   results: Path | Sequence[Path] | None = None,
                   values: Sequence[Path | str] = (), sets: Sequence[str] = (),
                   baseline: RunView | None = None, batch: int | None = None,
                   batch_target: float | None = None, results_store: str | None = None,
                   retry_failed: bool = False) -> int:
    """Run the study on ``client`` and print what it gave; write ``results`` (JSON with the
    values and sets the cluster was rendered from; ``.parquet``/``.csv``: the runs as a
    table; ``results_store``: runs streamed to that store, only the missing ones run) and
    check against ``baseline`` (read with :func:`load_baseline`). Returns the
    CLI's exit code: EXIT_DIFFERS if ``baseline`` differs (it wins: a failure that comes and
    goes with the mode *is* the finding), else EXIT_FAILED if a run or an aggregation
    failed, else 0."""
    from .report import all_ok, announce, report, report_failures
    from .table import is_table, write_table

    announce(study, echo, sims)
    if results_store:
        run = run_study_stored(client, study, launch.bundle_repo, results_store, echo,
                               sims=sims, repo_env=launch.bundle_env, progress=progress,
                               batch=batch, batch_target=batch_target,
                               retry_failed=retry_failed)
    else:
        run = run_study(client, study, launch.bundle_repo, sims=sims,
                        repo_env=launch.bundle_env, progress=progress,
                        batch=batch, batch_target=batch_target)
    echo(f"bundle: {run.bundle}")
    targets = [results] if isinstance(results, Path) else list(results or ())
    report(run, study, echo, results_named=bool(targets))
    echo(f"pool stats: {format_pool_stats(run.pool_stats)}")
    report_failures(run, echo, results_named=bool(targets))
    for path in targets:
        if is_table(path):
            n = write_table(run, path)
            echo(f"results: {path} ({n} rows, one per set and seed)")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results_document(
            run, values=[str(v) for v in values], sets=list(sets),
            mode=launch.config.summary(), config=launch.config.as_env(),
            expected_workers=launch.expected_workers,
            expected_threads=launch.expected_threads), indent=1))
        echo(f"results: {path}")
    code = EXIT_OK if all_ok(run, study) else EXIT_FAILED
    if baseline is not None:
        now = view_of(run, "this run", mode=launch.config.summary(),
                      workers=f"{launch.expected_workers} processes, "
                              f"{launch.expected_threads} threads")
        try:
            comparison = compare_runs(now, baseline)
        except InputsDiffer as exc:
            echo(f"compare: {exc}")
            return EXIT_INPUTS_DIFFER
        if baseline.inputs is None:
            echo(f"compare: note: {baseline.label} records no inputs (written by an older "
                 "modelops-runtime): the bundle and params could not be checked")
        for line in comparison.report(baseline.label, same_mode=same_mode(now, baseline)):
            echo(f"compare: {line}")
        if comparison.differs:
            code = EXIT_DIFFERS
    return code
