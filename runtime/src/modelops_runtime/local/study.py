"""The study ``modelops-runtime local --study`` runs (see runtime/examples/sir/README.md):
the study file, its bundle packed into the cluster's bundle repo, the seeded sims and the
aggregation submitted through the client API, and the report — aggregate, pool stats,
failures, the ``--results`` file and the ``--compare`` check (compare.py) against an
earlier one.

Nothing here starts or stops processes: it runs on any Dask client (``command`` hands it
the local cluster's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import LocalModeError, ModelOpsError
from ..models import SimResult, SimTask, check_entrypoint
from .compare import EXIT_INPUTS_DIFFER, InputsDiffer, compare_runs, same_mode
from .results import (SINGLE_SET, FailureRecord, RunInputs, RunView, SimRecord, StudyRun,
                      results_document, view_of)
from .plan import Echo, LaunchPlan


STUDY_FILE = "study.yaml"
EXIT_OK = 0
EXIT_FAILED = 1       # a sim or the aggregation failed (or an error stopped the run)
EXIT_DIFFERS = 3      # --compare found a seed whose outcome differs; wins over EXIT_FAILED


# ---------------------------------------------------------------------------------
# the study file and its run
# ---------------------------------------------------------------------------------

class Study(BaseModel):
    """``sims`` seeded runs of one entrypoint with the same params, then one aggregation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    bundle: Path                       # bundle directory, relative to the study file
    entrypoint: str                    # "module:function", called as function(params, seed)
    aggregate: str | None = None       # "module:function", called with the list of outputs
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    sims: int = Field(100, ge=1)
    first_seed: int = 0

    _entry = field_validator("entrypoint")(classmethod(lambda cls, v: check_entrypoint(v)))

    @field_validator("aggregate")
    @classmethod
    def _agg(cls, v: str | None) -> str | None:
        return None if v is None else check_entrypoint(v)

    @classmethod
    def load(cls, path: Path | str) -> "Study":
        """Read ``path`` (a study file, or a directory holding ``study.yaml``)."""
        path = Path(path)
        file = path / STUDY_FILE if path.is_dir() else path
        if not file.is_file():
            raise LocalModeError(
                f"no study at {path}: expected a study file or a directory with {STUDY_FILE} "
                "(see runtime/examples/sir for the format)")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise LocalModeError(f"study file {file} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise LocalModeError(f"study file {file} must hold a mapping of study fields")
        try:
            study = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'study'}: {e['msg']}"
                                 for e in exc.errors())
            raise LocalModeError(
                f"study file {file} is invalid: {problems}. Allowed fields: "
                f"{', '.join(cls.model_fields)} (see runtime/examples/sir/study.yaml)") from None
        bundle = (file.parent / study.bundle).resolve()
        if not bundle.is_dir():
            raise LocalModeError(
                f"study file {file}: bundle directory {bundle} does not exist; `bundle:` is "
                "the model directory, relative to the study file")
        return study.model_copy(update={"bundle": bundle})

    def tasks(self, bundle_ref: str, sims: int | None = None) -> list[SimTask]:
        n = self.sims if sims is None else sims
        return [SimTask(bundle=bundle_ref, entrypoint=self.entrypoint, params=dict(self.params),
                        seed=self.first_seed + i) for i in range(n)]

    def inputs(self, bundle_ref: str, sims: int | None = None) -> RunInputs:
        """What a run of this study computes (recorded in --results, checked by compare)."""
        n = self.sims if sims is None else sims
        return RunInputs(bundle=bundle_ref, entrypoint=self.entrypoint,
                         aggregate=self.aggregate, sets={SINGLE_SET: dict(self.params)},
                         seeds={SINGLE_SET: [self.first_seed + i for i in range(n)]})

    @property
    def key_name(self) -> str:
        """The study name as a Dask key part (letters, digits, '_' and '.')."""
        return re.sub(r"[^A-Za-z0-9_.]", "_", self.name)


def pack_study(study: Study, repo: Path) -> str:
    from ..bundles import pack

    return pack(study.bundle, str(repo))


def run_study(client, study: Study, bundle_repo: Path, *, sims: int | None = None,
              progress: bool = True) -> StudyRun:
    """Pack the study's bundle, run its sims with a progress bar, then its aggregation
    (over the successful sims only: failures are reported apart, never hidden)."""
    from ..client import aggregate, gather_study, package_sets, submit

    started = time.perf_counter()
    ref = pack_study(study, bundle_repo)
    tasks = study.tasks(ref, sims)
    futures = submit(client, tasks, study=study.key_name)
    outcome = gather_study(client, futures, progress=progress, desc=study.name)
    records = [SimRecord(seed=tasks[i].seed, result=r)
               for i, r in zip(outcome.indices, outcome.results)]
    failures = [FailureRecord(seed=tasks[f.index].seed, error_type=f.error_type,
                              message=f.message) for f in outcome.failures]
    agg, agg_error = None, None
    if study.aggregate and records:
        ok_futures = [futures[i] for i in outcome.indices]
        try:
            agg = aggregate(client, ok_futures, ref, study.aggregate).result()
        except ModelOpsError as exc:   # reported next to the sims, which stay valid
            agg_error = f"{type(exc).__name__}: {exc}"
    nthreads = dict(client.nthreads())
    worker_pids = dict(client.run(os.getpid))
    used = {r.result.env_digest for r in records} | ({agg.env_digest} if agg else set())
    environments = {d: p for d, p in package_sets(client).items() if d in used}
    elapsed = time.perf_counter() - started
    return StudyRun(study=study.name, bundle=ref, sims=records, failures=failures,
                    aggregate=agg, aggregate_error=agg_error, nthreads=nthreads,
                    worker_pids=worker_pids, environments=environments,
                    inputs=study.inputs(ref, sims),
                    pool_stats=pool_stats(client, [r.result for r in records]),
                    elapsed_s=elapsed)


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
        from ..client.stats import cluster_stats

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


def check_direct_dependencies(study: Study, launch: LaunchPlan) -> None:
    """With executor=direct the bundle's dependencies must already be installed where the
    worker runs (its image; locally: this environment). Checked with the workers' own
    interpreter and environment before anything starts, so the user gets one clear line
    instead of 300 failed sims."""
    from ..bundles import read_dependencies
    from ..config import ExecutorType

    if launch.config.executor_type is not ExecutorType.direct or not launch.workers:
        return
    deps = read_dependencies(study.bundle)
    if not deps:
        return
    proc = subprocess.run([sys.executable, "-c", _CHECK_DEPS, json.dumps(deps)],
                          env=launch.workers[0].env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LocalModeError(f"cannot check the bundle's dependencies: {proc.stderr.strip()}")
    missing = json.loads(proc.stdout)
    if missing:
        req = study.bundle / "requirements.txt"
        how = (f"{Path(sys.executable).parent / 'pip'} install -r {req}" if req.is_file()
               else f"{Path(sys.executable).parent / 'pip'} install {' '.join(missing)}")
        raise LocalModeError(
            f"executor=direct runs the bundle inside the Dask worker process, whose "
            f"environment lacks {', '.join(missing)}; nothing was started. Install them "
            f"there (`{how}`; on Kubernetes: into the worker image) or use a preset with "
            "executor isolated_warm, which builds the bundle's own venv")


# ---------------------------------------------------------------------------------
# the report: what the user reads, the --results file, the --compare check
# ---------------------------------------------------------------------------------

def run_and_report(client, study: Study, launch: LaunchPlan, echo: Echo, *,
                   sims: int | None = None, progress: bool = True, results: Path | None = None,
                   values: Sequence[Path | str] = (), sets: Sequence[str] = (),
                   baseline: RunView | None = None) -> int:
    """Run the study on ``client`` and print what it gave; write ``results`` (with the
    values and sets the cluster was rendered from) and check against ``baseline`` (read
    with :func:`load_baseline`). Returns the CLI's exit code: EXIT_DIFFERS if ``baseline``
    differs (it wins: a failure that comes and goes with the mode *is* the finding), else
    EXIT_FAILED if a sim or the aggregation failed, else 0."""
    n = sims or study.sims
    echo(f"study {study.name}: {n} seeded sims of {study.entrypoint} "
         f"(seeds {study.first_seed}..{study.first_seed + n - 1})"
         + (f", then {study.aggregate}" if study.aggregate else ""))
    run = run_study(client, study, launch.bundle_repo, sims=n, progress=progress)
    echo(f"bundle: {run.bundle}")
    if run.aggregate_error:
        echo(f"aggregate ({study.aggregate}) failed: {run.aggregate_error}")
    if run.aggregate is not None:
        echo(f"aggregate ({study.aggregate}):")
        out = run.aggregate.outputs
        if isinstance(out, dict):
            width = max((len(str(k)) for k in out), default=0)
            for k, v in out.items():
                echo(f"  {str(k):<{width}}  {v}")
        else:
            echo(f"  {out!r}")
    echo(f"pool stats: {format_pool_stats(run.pool_stats)}")
    echo(f"sims: {len(run.sims)} ok, {len(run.failures)} failed; elapsed {run.elapsed_s:.1f} s")
    for f in run.failures[:5]:
        echo(f"  seed {f.seed} failed: {f.error_type}: {f.message.splitlines()[0] if f.message else ''}")
    if results:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(results_document(
            run, values=[str(v) for v in values], sets=list(sets),
            mode=launch.config.summary(), config=launch.config.as_env(),
            expected_workers=launch.expected_workers,
            expected_threads=launch.expected_threads), indent=1))
        echo(f"results: {results}")
    ok = not run.failures and (run.aggregate is not None or not study.aggregate)
    code = EXIT_OK if ok else EXIT_FAILED
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
