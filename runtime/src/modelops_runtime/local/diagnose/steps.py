"""The steps of ``diagnose``: each a real local cluster with the user's values plus the
``--set`` that removes one layer.

- covers: which steps a mode gets, running one step, describing a mode, the bundle's
  requirement names and whether the local worker environment has them (direct steps).
- does not: judge (verdict.py) or print (report.py).
- see also: docs/design.md "diagnose steps" (the steps in order and why each is there).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from ...config import ExecutorType, RuntimeConfig
from ...errors import LocalModeError
from ..cluster.launch import LaunchPlan, plan
from ..cluster.render import DEFAULT_RELEASE, find_chart, render_cluster
from ..results import RunView, results_document, view_of
from ..study.run import Study, direct_install_hint, missing_direct_dependencies, run_study
from ..study.preflight import check_study_entrypoints
from ..cluster.supervise import LocalCluster

FRESH_PROCESS = ("worker.executor.maxProcessReuse=1", "worker.executor.forceFreshVenv=false")
FRESH_VENV = ("worker.executor.forceFreshVenv=true",)
DIRECT = ("worker.executor.type=direct",)
WARM = ("worker.executor.type=isolated_warm",)
EXEC = ("worker.executor.freshProcessFrom=exec",)
ONE_PROCESS = ("worker.replicas=1", "worker.processes=1", "worker.threads=1")


FRESH_VENV_SIMS = 8   # a venv's fault shows in every task that uses it: a sample decides
REFERENCE_SAMPLE = 4  # seeds run in a new interpreter each to check the template fork


@dataclass(frozen=True)
class Step:
    name: str
    title: str                      # what this step removes, in a few words
    sets: tuple[str, ...] = ()      # --set added to the user's values
    sims: int | None = None         # fewer seeds than the other steps (fresh-venv)
    direct: bool = False            # runs executor=direct (needs the bundle's requirements
                                    # in the worker environment)


@dataclass
class StepRun:
    step: Step
    index: int
    view: RunView | None = None
    elapsed_s: float = 0.0
    skipped: str = ""               # why the step did not run
    results: Path | None = None     # its --results file
    mode: str = ""
    workers: str = ""
    failures: int = 0
    total: int = 0                  # runs of the step: (set, seed) pairs
    first_failure: str = ""         # "seed N: Type: message" of the first failed sim
    study_s: float = 0.0            # the study alone (no cluster start), seconds

    @property
    def ran(self) -> bool:
        return self.view is not None


@dataclass
class Context:
    """What every step shares: the user's inputs and the caches."""

    study: Study
    values: list[Path]
    sets: list[str]
    sims: int | None              # seeds (per set); None: the study's own
    chart: Path
    state_dir: Path
    out_dir: Path
    release: str = DEFAULT_RELEASE
    start_timeout: float = 180
    say: Callable[[str], None] = print
    log: Callable[[str], None] = lambda line: None
    runs: list[StepRun] = field(default_factory=list)
    config: RuntimeConfig | None = None     # the user's mode, as rendered
    launch: LaunchPlan | None = None
    results_store: str | None = None        # each step's runs in <store>/<index>-<step>
    retry_failed: bool = False
    requirements: list[str] = field(default_factory=list)  # the bundle's requirement names
    direct_missing: str = ""      # why direct steps cannot run here ("" : they can)
    fresh_exec: bool = False      # fresh-process steps start a new interpreter per task
    reference_note: str = ""      # how the reference was chosen (said in the verdict)
    exec_unstable: str = ""       # a new interpreter per task differed from itself (how)
    template_agreed: str = ""     # the forked step found equal to a new interpreter per task
    venv_note: str = ""           # why fresh-venv ran from exec (said in the verdict)
    study_path: Path | None = None

    def replay(self, *extra: str, sims: int | None = None, command: str = "local") -> str:
        """A command the user can paste: ``modelops-runtime <command>`` with their values,
        their --set and ``extra`` --set, on their study."""
        args = ["modelops-runtime", command]
        for v in self.values:
            args += ["-f", str(v)]
        for s in (*self.sets, *extra):
            args += ["--set", s]
        args += ["--study", str(self.study_path)]
        n = sims if sims is not None else self.sims
        if n is not None:
            args += ["--sims", str(n)]
        return shlex.join(args)


def prepare(study_path: Path, values: Sequence[Path], sets: Sequence[str], *,
            sims: int | None, chart: Path | None, state_dir: Path | None,
            out_dir: Path | None, release: str = DEFAULT_RELEASE,
            say: Callable[[str], None] = print, start_timeout: float = 180,
            results_store: str | None = None, retry_failed: bool = False) -> Context:
    """Everything checked before a process starts: the study and its entrypoints (in the
    bundle's files), the values (rendered once in the user's mode), the directories, the
    results store's filesystem. Raises
    EntrypointError/LocalModeError/ChartRenderError/ResultsStoreError."""
    study = Study.load(study_path)
    check_study_entrypoints(study)
    if results_store:
        from ...client.store.fs import open_fs

        open_fs(results_store)
    chart = Path(chart or find_chart())
    state = Path(state_dir or (chart.resolve().parent / ".state" / "local"))
    rendered = render_cluster(values, sets, chart=chart, release=release)
    launch = plan(rendered, state, release=release, run_id=_run_id("check"))
    if launch.expected_workers == 0:
        raise LocalModeError("worker.replicas is 0 in these values: no worker would run the "
                             "study; set worker.replicas >= 1")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir or state / "diagnose" / f"{stamp}-{os.getpid()}")
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "diagnose.log"

    def log(line: str) -> None:
        with log_file.open("a") as fh:
            fh.write(line.rstrip("\n") + "\n")

    # an autoscaled release is diagnosed at the fixed count the local mode runs (the
    # chart refuses autoscaling in the diagnosis modes the steps switch to)
    ctx = Context(study=study, values=list(values), sets=[*sets, *rendered.fixed_layout],
                  sims=sims, chart=chart, state_dir=state, out_dir=out,
                  release=release, start_timeout=start_timeout, say=say, log=log,
                  config=launch.config, launch=launch, study_path=Path(study_path),
                  requirements=requirement_names(study),
                  results_store=results_store, retry_failed=retry_failed)
    if launch.config.executor_type is ExecutorType.direct:
        ctx.direct_missing = direct_unavailable(study, launch)
    return ctx


def requirement_names(study: Study) -> list[str]:
    """The canonical names of the bundle's own requirements."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    from ...bundles import read_dependencies

    names = []
    for line in read_dependencies(study.bundle):
        try:
            names.append(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    return names


def direct_unavailable(study: Study, launch: LaunchPlan) -> str:
    """Why executor=direct cannot run this bundle here, in one sentence with the command
    that fixes it ("" when it can)."""
    missing = missing_direct_dependencies(study, launch)
    if not missing:
        return ""
    return (f"the local worker environment lacks the bundle's {', '.join(missing)} (on "
            f"Kubernetes the worker image must hold them); to run the direct steps too, "
            f"install them with `{direct_install_hint(study, missing)}`")


FAILURE_CHARS = 1000  # a failure's first line is said whole up to this (it ends in advice)


def first_line(message: str, limit: int = FAILURE_CHARS) -> str:
    """The first line of a failure's message, whole: the runtime's messages end in what to
    do (a value to set), so a cut is made only past ``limit``, at a word, marked " ..."."""
    line = (message.splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def _run_id(name: str) -> str:
    # the last part is our pid: the run-directory pruning never touches a live run's
    return f"{datetime.now():%Y%m%d-%H%M%S}-diagnose-{name}-{os.getpid()}"


def planned_steps(config: RuntimeConfig, launch: LaunchPlan,
                  direct_missing: str = "") -> tuple[list[Step], dict[str, str]]:
    """The steps for the user's mode, and the ones not run because the mode already is
    that step or cannot run here (name → why, a clause). A direct mode whose worker
    environment lacks the bundle's requirements gets the warm steps in its place."""
    warm = config.executor_type is ExecutorType.isolated_warm
    skipped: dict[str, str] = {}
    # a direct mode's fresh-process step runs the bundle in its own venv (warm)
    fresh = FRESH_PROCESS if warm else (*WARM, *FRESH_PROCESS)
    steps: list[Step] = []
    if warm or not direct_missing:
        steps += [Step("your-mode", "your values as they are", direct=not warm),
                  Step("your-mode-again", "your values again (is the mode deterministic?)",
                       direct=not warm)]
    else:
        skipped["your-mode"] = direct_missing
    if warm and config.max_process_reuse == 1 and not config.force_fresh_venv:
        skipped["fresh-process"] = "your mode already starts a fresh process per task"
    else:
        steps.append(Step("fresh-process", "a new warm process per task (no state carried "
                          "between tasks), cached venv kept"
                          + ("" if warm else ", the bundle's own venv instead of the "
                             "worker environment"), fresh))
    if warm and not config.force_fresh_venv:
        steps.append(Step("fresh-venv", f"a new venv and a new process per task (the first "
                          f"{FRESH_VENV_SIMS} seeds: a venv's fault shows in every task)",
                          FRESH_VENV, sims=FRESH_VENV_SIMS))
    else:
        skipped["fresh-venv"] = ("your mode already builds a fresh venv per task" if warm
                                 else "your mode runs in the worker environment, not in a "
                                 "cached venv")
    if warm:
        steps.append(Step("direct", "the worker's own environment instead of the bundle's "
                          "venv; bundle modules re-imported per task", DIRECT, direct=True))
    other = 2 if config.native_threads == 1 else 1
    in_direct = not warm and not direct_missing
    steps.append(Step(f"native-threads={other}", f"native libraries get {other} thread(s) "
                      f"instead of {config.native_threads}",
                      (*(() if in_direct else fresh), f"worker.executor.nativeThreads={other}"),
                      direct=in_direct))
    if launch.expected_workers == 1 and launch.rendered.nthreads == 1:
        skipped["one-process"] = "your mode already runs one task at a time in one process"
    else:
        steps.append(Step("one-process", "one worker process, one task at a time",
                          (*(() if in_direct else fresh), *ONE_PROCESS), direct=in_direct))
    return steps, skipped


def again(step: Step) -> Step:
    """The same step once more (is it deterministic?)."""
    return replace(step, name=f"{step.name}-again", title=f"{step.name} again (is it "
                   "deterministic?)", sims=step.sims)


def after(step: Step) -> Step:
    """The same step once more, after every other step: do its outputs still agree with its
    first run, or did a step leave something behind (a file at a fixed path) that later runs
    read?"""
    return replace(step, name=f"{step.name}-after", title=f"{step.name} once more, after the "
                   "other steps (did a step leave something behind that later runs read?)")


def direct_one_process() -> Step:
    return Step("direct-one-process", "the worker's own environment in one worker process, "
                "one task at a time (do direct's worker processes interfere?)",
                (*DIRECT, *ONE_PROCESS), direct=True)


def venv_sample() -> Step:
    """fresh-venv the plain way on the first seeds: a venv built by uv for each task (a
    clone of a pristine build) and a new interpreter (exec), in one worker process (one
    uv build, see docs/diagnose.md)."""
    return Step("fresh-venv-exec", f"a venv built per task and a new interpreter on the "
                f"first {REFERENCE_SAMPLE} seeds, in one worker process (checks the shared "
                "build and template fork fresh-venv uses)", (*FRESH_VENV, *EXEC, *ONE_PROCESS),
                sims=REFERENCE_SAMPLE)


def reference_sample(fresh: Step | None = None) -> Step:
    """``fresh`` (a fresh-process step) in a new interpreter per task, on the first seeds,
    in one worker process (a new interpreter sees nothing of the processes beside it)."""
    sets = fresh.sets if fresh is not None else FRESH_PROCESS
    return Step("fresh-process-exec", f"a new interpreter per task on the first "
                f"{REFERENCE_SAMPLE} seeds, in one worker process (checks the template fork "
                "fresh-process uses)", (*sets, *EXEC, *ONE_PROCESS), sims=REFERENCE_SAMPLE)


def describe_mode(config: RuntimeConfig, launch: LaunchPlan) -> str:
    r = launch.rendered
    how = config.executor_type.value
    if config.executor_type is ExecutorType.isolated_warm:
        how += (", fresh venv per task" if config.force_fresh_venv else
                f", process reuse {config.max_process_reuse}")
    return (f"{how}, native threads {config.native_threads}, "
            f"{r.replicas}×{r.nworkers}×{r.nthreads} (pods×processes×threads)")


def run_step(ctx: Context, step: Step, index: int) -> StepRun:
    """One step on its own local cluster (started, used, stopped: nothing outlives it).
    A step that cannot run in this environment (the direct step without the bundle's
    dependencies in the worker environment) is returned skipped, with the reason."""
    if ctx.fresh_exec and FRESH_PROCESS[0] in step.sets and EXEC[0] not in step.sets:
        step = replace(step, sets=(*step.sets, *EXEC))
    sr = StepRun(step=step, index=index)
    rendered = render_cluster(ctx.values, [*ctx.sets, *step.sets], chart=ctx.chart,
                              release=ctx.release)
    launch = plan(rendered, ctx.state_dir, release=ctx.release, run_id=_run_id(step.name))
    sr.mode = describe_mode(launch.config, launch)
    sr.workers = f"{launch.expected_workers} processes, {launch.expected_threads} threads"
    ctx.say(f"diagnose: step {index} {step.name}: {step.title} [{sr.mode}] ...")
    why = direct_unavailable(ctx.study, launch) if step.direct else ""
    if why:
        sr.skipped = why
        ctx.say(f"diagnose: step {index} {step.name} is not run: {why}")
        return sr
    started = time.perf_counter()
    with LocalCluster(launch, ctx.log, start_timeout=ctx.start_timeout) as cluster:
        client = cluster.client()
        sims = ctx.sims if step.sims is None else min(step.sims, ctx.sims or step.sims)
        if ctx.results_store:   # a rerun after an interruption resumes each step's runs
            from ..study.run import run_study_stored

            url = f"{ctx.results_store.rstrip('/')}/{index}-{step.name}"
            run = run_study_stored(client, ctx.study, launch.bundle_repo, url, ctx.log,
                                   sims=sims, repo_env=launch.bundle_env, progress=False, retry_failed=ctx.retry_failed)
        else:
            run = run_study(client, ctx.study, launch.bundle_repo, sims=sims,
                            repo_env=launch.bundle_env, progress=False)
    sr.elapsed_s = time.perf_counter() - started
    sr.study_s = run.elapsed_s
    sr.results = ctx.out_dir / f"{index}-{step.name}.json"
    sr.results.write_text(json.dumps(results_document(
        run, values=[str(v) for v in ctx.values], sets=[*ctx.sets, *step.sets],
        mode=launch.config.summary(), config=launch.config.as_env(),
        expected_workers=launch.expected_workers,
        expected_threads=launch.expected_threads), indent=1))
    sr.view = view_of(run, step.name, mode=launch.config.summary(), workers=sr.workers)
    failed = sr.failures = len(run.failures)
    sr.total = len(run.sims) + failed
    if run.failures:
        f = run.failures[0]
        sr.first_failure = f"seed {f.seed}: {f.error_type}: {first_line(f.message)}"
    ctx.log(f"step {step.name}: {len(run.sims)} ok, {failed} failed, {sr.elapsed_s:.1f} s, "
            f"logs {launch.run_dir / 'logs'}")
    return sr
