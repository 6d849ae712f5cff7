"""Embedded local mode: the chart's scheduler and worker containers as local processes.

A bug chased on a laptop must reproduce under exactly the configuration the pods get, so
the local mode reads its configuration from the same place the pods do: ``helm template``
of ``chart/`` with the user's values files. From the rendered Deployments it takes the
scheduler and worker containers' command, args and env and starts them as local processes.
Only what cannot work off-cluster is rewritten:

* the scheduler address (a Service name) → a local ``dask scheduler`` on a free 127.0.0.1 port,
* listening ports and dashboards → free 127.0.0.1 ports,
* pod volume paths (``volumeMounts``) → ``<state>/volumes/<volume>``, kept between runs,
* per-run scratch (``TMPDIR``, Dask's ``--local-directory``) → ``<state>/runs/<run>/``,
  removed at teardown (the logs stay),
* ``MODELOPS_BUNDLE_REPO`` → ``<state>/bundle-repo``, where the study's bundle is packed,
* ``--memory-limit`` → ``0`` (with a notice) if the replicas' total exceeds this machine.

Every other arg and env value is kept exactly as rendered. Processes are started in their
own sessions and tracked by pid (with their descendants) so that success, failure, Ctrl-C
and SIGTERM all end with no process left behind.

The chart is rendered by ``render.py``; the study a run executes is ``study.py``'s. Here:
the launch plan, the supervision of the local processes, and the ``modelops-runtime local``
sub-command that ties the three together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from .config import PREFIX, RuntimeConfig, parse_bytes
from .errors import LocalModeError, ModelOpsError
from .render import (DEFAULT_RELEASE, HELM_ENV, Container, RenderedCluster, drop_opt,
                     find_chart, get_opt, render_cluster, set_opt)
from .study import (EXIT_DIFFERS, EXIT_FAILED, EXIT_OK, STUDY_FILE, Study,
                    check_direct_dependencies, load_baseline, run_and_report)

LOCALHOST = "127.0.0.1"
SCHEDULER_TOKEN = "{scheduler_address}"   # replaced by the local scheduler's address at start
KEEP_RUNS = 5                             # run dirs (logs) kept under <state>/runs

Echo = Callable[[str], None]


def _echo(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------
# launch plan: the rendered containers rewritten for this machine
# ---------------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command/args/env (``$$`` escapes)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, text)



class ProcessSpec(BaseModel):
    """One local process to start: argv, full environment and where its output goes."""

    model_config = ConfigDict(frozen=True)

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path


class LaunchPlan(BaseModel):
    """Everything the local cluster will start, decided before anything starts."""

    model_config = ConfigDict(frozen=True)

    rendered: RenderedCluster
    config: RuntimeConfig
    scheduler: ProcessSpec
    workers: list[ProcessSpec]
    state_dir: Path
    run_dir: Path
    scheduler_file: Path
    bundle_repo: Path
    notices: list[str] = Field(default_factory=list)

    @property
    def expected_workers(self) -> int:
        return self.rendered.replicas * self.rendered.nworkers

    @property
    def expected_threads(self) -> int:
        return self.expected_workers * self.rendered.nthreads

    def describe(self) -> str:
        r = self.rendered
        return (f"{r.replicas} worker pod(s) × {r.nworkers} process(es) × {r.nthreads} "
                f"thread(s) = {self.expected_workers} Dask worker processes, "
                f"{self.expected_threads} threads")


def _dask_executable(command: Sequence[str]) -> list[str]:
    """The rendered ``dask`` from the environment this runtime is installed in (the one that
    can import ``modelops_runtime.preload``), else from PATH."""
    if not command:
        raise LocalModeError("a rendered container has no command; expected ['dask']")
    head, *rest = command
    if head == "dask":
        local = Path(sys.executable).parent / "dask"
        head = str(local) if local.exists() else (shutil.which("dask") or head)
    return [head, *rest]


class _Rewriter:
    """Maps pod volume paths to local directories under ``<state>/volumes/<volume>``."""

    def __init__(self, mounts: Mapping[str, str], volumes: Path) -> None:
        # longest mount path first so nested mounts map to their own volume
        self.mounts = sorted(mounts.items(), key=lambda kv: -len(kv[0]))
        self.volumes = volumes

    def path(self, value: str) -> str:
        for mount, vol in self.mounts:
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                local = self.volumes / vol / value[len(mount):].lstrip("/")
                return str(local).rstrip("/")
        return value


def _quantity(text: str) -> float | None:
    """Bytes of a ``--memory-limit`` value (Kubernetes or Dask units); None for 'auto',
    fractions and anything else Dask resolves itself."""
    from dask.utils import parse_bytes as dask_bytes

    for parse in (parse_bytes, dask_bytes):
        with contextlib.suppress(ValueError, TypeError):
            return float(parse(text))
    return None


def _machine_memory() -> int:
    return psutil.virtual_memory().total


def plan(rendered: RenderedCluster, state_dir: Path, *,
         base_env: Mapping[str, str] | None = None, run_id: str | None = None,
         release: str = DEFAULT_RELEASE) -> LaunchPlan:
    """Rewrite the rendered containers into local processes. Raises before anything starts
    if the rendered runtime configuration is invalid."""
    state_dir = Path(state_dir).resolve()
    run_id = run_id or f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    run_dir = state_dir / "runs" / run_id
    volumes = state_dir / "volumes"
    bundle_repo = state_dir / "bundle-repo"
    scheduler_file = run_dir / "scheduler.json"
    notices: list[str] = []

    # The local processes inherit this shell's environment (PATH, HOME, UV_* index
    # settings) but never its MODELOPS_*: the runtime's configuration comes only from
    # the values files, exactly as in a pod.
    inherited = dict(os.environ if base_env is None else base_env)
    dropped = sorted(k for k in inherited if k.upper().startswith(PREFIX))
    for k in dropped:
        del inherited[k]
    dropped = [k for k in dropped if k != HELM_ENV]   # ours, not the runtime's
    if dropped:
        notices.append(f"ignoring {', '.join(dropped)} from your environment: the local "
                       "mode takes the runtime configuration from the values files only")

    def container_env(c: Container, rw: _Rewriter, pod_name: str) -> dict[str, str]:
        env = dict(inherited)
        fields = {"metadata.name": pod_name, "status.podIP": LOCALHOST,
                  "status.hostIP": LOCALHOST, "spec.nodeName": "localhost",
                  "metadata.namespace": "default"}
        for name, path in c.field_env.items():
            env[name] = fields.get(path, "")
        for name, value in c.env.items():
            env[name] = rw.path(expand_refs(value, env))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- scheduler ------------------------------------------------------------------
    s = rendered.scheduler
    s_rw = _Rewriter(s.mounts, volumes)
    s_env = container_env(s, s_rw, f"{release}-scheduler-local")
    s_args = [s_rw.path(expand_refs(a, s_env)) for a in s.args]
    for opt in ("--interface", "--scheduler-file", "--pid-file"):
        s_args = drop_opt(s_args, opt)
    s_args = set_opt(s_args, "--host", LOCALHOST)
    s_args = set_opt(s_args, "--port", "0")
    s_args = set_opt(s_args, "--dashboard-address", f"{LOCALHOST}:0")
    s_args = set_opt(s_args, "--scheduler-file", str(scheduler_file))
    scheduler = ProcessSpec(name="scheduler", argv=_dask_executable(s.command) + s_args,
                            env=s_env, log=run_dir / "logs" / "scheduler.log")

    # -- workers --------------------------------------------------------------------
    w = rendered.worker
    w_rw = _Rewriter(w.mounts, volumes)
    nworkers = rendered.nworkers
    mem = get_opt(w.args, "--memory-limit")
    mem_override = None
    if mem is not None:
        per_process = _quantity(mem)
        if per_process and per_process > 1 and \
                per_process * nworkers * max(rendered.replicas, 1) > _machine_memory():
            mem_override = "0"
            notices.append(
                f"--memory-limit {mem} × {nworkers * rendered.replicas} worker processes "
                f"exceeds this machine's {_machine_memory() / 2**30:.1f} GiB: running with "
                "--memory-limit 0 (no Dask memory management) locally")

    worker_specs = []
    for i in range(rendered.replicas):
        pod = f"{release}-worker-local-{i}"
        env = container_env(w, w_rw, pod)
        env["MODELOPS_BUNDLE_REPO"] = str(bundle_repo)
        # scratch of this run (warm processes inherit TMPDIR): removed at teardown
        env["TMPDIR"] = str(run_dir / "tmp" / f"worker-{i}")
        args = [w_rw.path(expand_refs(a, env)) for a in w.args]
        # the positional scheduler address (a Service name on the cluster)
        for j, a in enumerate(args):
            if j > 0 and re.match(r"^[a-z]+://[^\s]+:\d+$", a) and not args[j - 1].startswith("--"):
                args[j] = SCHEDULER_TOKEN
                break
        else:
            raise LocalModeError(
                "the rendered worker args have no scheduler address (tcp://<host>:<port>); "
                f"got {w.args}")
        for opt in ("--listen-address", "--contact-address", "--interface",
                    "--worker-port", "--nanny-port", "--scheduler-file", "--pid-file"):
            args = drop_opt(args, opt)
        args = set_opt(args, "--host", LOCALHOST)
        args = set_opt(args, "--dashboard-address", f"{LOCALHOST}:0")
        local_dir = get_opt(args, "--local-directory")
        if local_dir is None or not local_dir.startswith(str(state_dir)):
            args = set_opt(args, "--local-directory", str(run_dir / "dask" / f"worker-{i}"))
        if mem_override is not None:
            args = set_opt(args, "--memory-limit", mem_override)
        name = get_opt(args, "--name")
        if name is not None and rendered.replicas > 1 and pod not in name:
            args = set_opt(args, "--name", f"{name}-{i}")
        worker_specs.append(ProcessSpec(
            name=f"worker-{i}", argv=_dask_executable(w.command) + args, env=env,
            log=run_dir / "logs" / f"worker-{i}.log"))

    # The runtime configuration the workers will build: validated here so a bad value
    # stops the run before any process starts (same message the worker would print).
    probe = worker_specs[0].env if worker_specs else container_env(w, w_rw, "probe")
    config = RuntimeConfig.from_env({k: v for k, v in probe.items() if k.startswith(PREFIX)})

    return LaunchPlan(rendered=rendered, config=config, scheduler=scheduler,
                      workers=worker_specs, state_dir=state_dir, run_dir=run_dir,
                      scheduler_file=scheduler_file, bundle_repo=bundle_repo,
                      notices=notices)


# ---------------------------------------------------------------------------------
# process supervision
# ---------------------------------------------------------------------------------

def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} was not written)"
    return "\n".join(lines[-n:])


class ProcessRecord:
    """Every process ever seen in some process trees, by pid *and* start time (pids are
    reused): a descendant whose parent was killed is in no tree any more, but is still
    found here. Thread-safe: a sampling thread records while another one stops."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}   # pid → create_time
        self._lock = threading.Lock()

    def add_tree(self, pid: int, *, include_root: bool = True) -> None:
        """Record the live descendants of ``pid`` (and ``pid`` itself, by default)."""
        try:
            top = psutil.Process(pid)
            procs = [top] if include_root else []
            procs += top.children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                created = proc.create_time()
                with self._lock:
                    self._seen.setdefault(proc.pid, created)

    def seen(self) -> dict[int, float]:
        with self._lock:
            return dict(self._seen)

    def alive(self) -> list[psutil.Process]:
        """Recorded processes that still run (same pid and start time, not a zombie)."""
        out = []
        for pid, created in self.seen().items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def wait_gone(self, timeout: float) -> None:
        """Until every recorded process has exited and been reaped, for at most ``timeout``."""
        deadline = time.monotonic() + timeout
        for pid, created in self.seen().items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.wait(max(0.1, deadline - time.monotonic()))


class _Started:
    def __init__(self, spec: ProcessSpec, popen: subprocess.Popen) -> None:
        self.spec = spec
        self.popen = popen


class LocalCluster:
    """The running local cluster of one :class:`LaunchPlan`. Use as a context manager:
    leaving it (normally, by an exception or by KeyboardInterrupt) stops every process
    it started and every process those started."""

    def __init__(self, plan: LaunchPlan, echo: Echo = _echo, start_timeout: float = 180) -> None:
        self.plan = plan
        self.echo = echo
        self.start_timeout = start_timeout
        self.address = ""
        self.scheduler: _Started | None = None
        self.workers: list[_Started] = []
        self._procs = ProcessRecord()         # every process of our trees
        self._stop_tracking = threading.Event()
        self._tracker: threading.Thread | None = None
        self._clients: list[Any] = []
        self._stopped = False

    # -- start -----------------------------------------------------------------------
    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, spec: ProcessSpec, argv: list[str]) -> _Started:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with spec.log.open("wb") as log:
            popen = subprocess.Popen(argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.add_tree(popen.pid)
        return _Started(spec, popen)

    def start(self, timeout: float | None = None) -> None:
        timeout = self.start_timeout if timeout is None else timeout
        p = self.plan
        for d in (p.run_dir, p.bundle_repo, p.state_dir / "volumes"):
            d.mkdir(parents=True, exist_ok=True)
        for spec in p.workers:
            Path(spec.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        self._tracker = threading.Thread(target=self._track_loop, name="localmode-pids",
                                         daemon=True)
        self._tracker.start()

        self.scheduler = self._spawn(p.scheduler, p.scheduler.argv)
        deadline = time.monotonic() + timeout
        while not (p.scheduler_file.exists() and p.scheduler_file.stat().st_size > 0):
            self._check_exited([self.scheduler], " during startup")
            if time.monotonic() > deadline:
                raise LocalModeError(
                    f"the scheduler did not start within {timeout:.0f}s; its log "
                    f"({p.scheduler.log}):\n{_tail(p.scheduler.log)}")
            time.sleep(0.1)
        self.address = self._read_address(deadline)

        for spec in p.workers:
            argv = [self.address if a == SCHEDULER_TOKEN else a for a in spec.argv]
            self.workers.append(self._spawn(spec, argv))
        self.wait_for_workers(p.expected_workers, timeout=max(10.0, deadline - time.monotonic()))

    def _read_address(self, deadline: float) -> str:
        while True:   # the file may be caught half-written
            with contextlib.suppress(ValueError, KeyError):
                return json.loads(self.plan.scheduler_file.read_text())["address"]
            if time.monotonic() > deadline:
                raise LocalModeError(f"unreadable scheduler file {self.plan.scheduler_file}")
            time.sleep(0.1)

    def client(self, **kwargs: Any):
        """A new :class:`distributed.Client` on the local scheduler (closed at stop)."""
        from distributed import Client

        c = Client(self.address, timeout=60, **kwargs)
        self._clients.append(c)
        return c

    def wait_for_workers(self, n: int, timeout: float = 180) -> None:
        """Until ``n`` worker processes are connected; a process that exits meanwhile fails
        the wait with its log."""
        client = self.client(set_as_default=False)
        deadline = time.monotonic() + timeout
        try:
            while True:
                connected = len(client.scheduler_info(n_workers=-1)["workers"])
                if connected >= n:
                    return
                self._check_exited([self.scheduler, *self.workers], " during startup")
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {w.spec.name} ({w.spec.log}) ---\n{_tail(w.spec.log, 20)}"
                                     for w in self.workers)
                    raise LocalModeError(
                        f"only {connected} of {n} Dask worker processes connected within "
                        f"{timeout:.0f}s; the machine may be overloaded (retry with a larger "
                        f"--start-timeout) or a worker failed:\n{logs}")
                time.sleep(0.2)
        finally:
            self._close_client(client)

    def _close_client(self, client) -> None:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        with contextlib.suppress(ValueError):
            self._clients.remove(client)

    # -- inspection ------------------------------------------------------------------
    @property
    def started(self) -> list[_Started]:
        return ([self.scheduler] if self.scheduler else []) + self.workers

    def _track(self) -> None:
        """Record every live process of our trees (so orphans can still be found)."""
        for s in self.started:
            self._procs.add_tree(s.popen.pid)

    def _track_loop(self) -> None:
        while not self._stop_tracking.wait(0.25):
            with contextlib.suppress(Exception):
                self._track()

    def pids(self) -> set[int]:
        """Every pid our processes have had so far (scheduler, nannies, worker processes,
        warm processes)."""
        self._track()
        return set(self._procs.seen())

    def alive(self) -> list[psutil.Process]:
        """Processes we started (directly or not) that are still running."""
        self._track()
        return self._procs.alive()

    def check_running(self) -> None:
        """Raise if the scheduler or a worker command has exited."""
        self._check_exited(self.started)

    @staticmethod
    def _check_exited(procs: Sequence[_Started], when: str = "") -> None:
        for s in procs:
            code = s.popen.poll()
            if code is not None:
                raise LocalModeError(
                    f"the local {s.spec.name} exited with code {code}{when}; its log "
                    f"({s.spec.log}):\n{_tail(s.spec.log)}")

    # -- stop ------------------------------------------------------------------------
    def stop(self, grace: float = 20) -> None:
        """Stop everything: clients, workers (graceful, then SIGKILL), scheduler, and any
        process of our trees still alive; then remove the run's scratch directories."""
        if self._stopped:
            return
        self._stopped = True
        with _interrupts_deferred():
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        for c in list(self._clients):
            self._close_client(c)
        with contextlib.suppress(Exception):
            self._track()
        forced = self._terminate(self.workers, grace)
        forced += self._terminate([self.scheduler] if self.scheduler else [], grace)
        self._stop_tracking.set()
        if self._tracker is not None:
            self._tracker.join(5)
        orphans = self.alive()   # e.g. warm processes of a worker process that was killed
        for proc in orphans:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if forced or orphans:
            self.echo(f"notice: killed {', '.join(forced) or 'no local command'} after "
                      f"{grace:.0f}s without stopping, and {len(orphans)} orphaned process(es)")
        self._procs.wait_gone(10)
        for d in (self.plan.run_dir / "tmp", self.plan.run_dir / "dask"):
            shutil.rmtree(d, ignore_errors=True)
        _prune_runs(self.plan.state_dir / "runs", keep=KEEP_RUNS)

    def _terminate(self, procs: Sequence[_Started], grace: float) -> list[str]:
        """SIGTERM each process group (graceful close), SIGKILL what is left after
        ``grace``; returns the names of the commands that needed SIGKILL."""
        for s in procs:
            _killpg(s.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for s in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.popen.wait(max(0.1, deadline - time.monotonic()))
        forced = [s.spec.name for s in procs if s.popen.poll() is None]
        for s in procs:
            _killpg(s.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.popen.wait(10)
        return forced


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) during teardown must not leave processes behind: hold
    both signals until every process is gone, then re-raise the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _prune_runs(runs: Path, keep: int) -> None:
    """Keep the logs of the last ``keep`` runs; never touch a run whose CLI is alive."""
    if not runs.is_dir():
        return
    dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for d in dirs[:-keep]:
        owner = d.name.rsplit("-", 1)[-1]
        if owner.isdigit() and psutil.pid_exists(int(owner)):
            continue
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------
# CLI: modelops-runtime local
# ---------------------------------------------------------------------------------

EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every sim and the aggregation ran (with --compare: every seed as before)
  {EXIT_FAILED}    a sim or the aggregation failed, or an error stopped the run (see stderr)
  {EXIT_USAGE}    bad command line
  {EXIT_DIFFERS}    --compare: a seed's outputs differ, it failed in only one of the runs or
       with another error type, or it is in only one of the runs (wins over {EXIT_FAILED})
  {EXIT_INTERRUPTED}  Ctrl-C, {EXIT_TERMINATED} SIGTERM: the local cluster was stopped, no process is left"""


def register(sub) -> None:
    p = sub.add_parser(
        "local", help="run the chart's scheduler and workers as local processes",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description=textwrap.fill(
            "Render chart/ with helm from the given values files and start its "
            "scheduler and worker containers (command, args, env) as local "
            "processes on 127.0.0.1: the same configuration the pods get. Then run "
            "a study (--study) and stop, or keep the cluster up (--keep) until "
            "Ctrl-C. No process is left behind."))
    p.add_argument("-f", "--values", action="append", default=[], type=Path, metavar="VALUES",
                   help="values file (repeatable, later files win; like helm -f)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="value override (repeatable; like helm --set)")
    p.add_argument("--study", type=Path, metavar="PATH",
                   help=f"study to run: a directory with {STUDY_FILE} or a study file")
    p.add_argument("--sims", type=int, metavar="N", help="number of seeds (default: the study's)")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="write every result with its execution metadata, and every failed "
                        "seed with its error type, as JSON (NaN/inf as NaN/Infinity)")
    p.add_argument("--compare", type=Path, metavar="FILE",
                   help="compare seed by seed (outputs, or the error type of a failed sim) "
                        "with an earlier --results FILE (exit "
                        f"{EXIT_DIFFERS} if any differ): does this mode change results?")
    p.add_argument("--keep", action="store_true",
                   help="keep the cluster up (after the study, if any) until Ctrl-C")
    p.add_argument("--chart", type=Path, help="chart directory (default: the repository's chart/)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="release name to render with")
    p.add_argument("--state-dir", type=Path,
                   help="local stand-in for the pod volumes, bundle repo and logs "
                        "(default: .state/local in the repository)")
    p.add_argument("--start-timeout", type=float, default=180, metavar="S",
                   help="seconds to wait for every worker process to connect")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: tear everything down, then exit."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(args: argparse.Namespace) -> int:
    echo = _echo
    if args.sims is not None and args.sims < 1:
        print("error: --sims must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if not args.study and not args.keep:
        print("error: nothing to do: give --study PATH (run it, then stop) and/or --keep "
              "(keep the cluster up until Ctrl-C)", file=sys.stderr)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.perf_counter()
    try:
        study = Study.load(args.study) if args.study else None
        baseline = load_baseline(args.compare) if args.compare else None
        chart = args.chart or find_chart()
        state = args.state_dir or (Path(chart).resolve().parent / ".state" / "local")
        rendered = render_cluster(args.values, args.set, chart=chart, release=args.release)
        launch = plan(rendered, state, release=args.release)
        if study is not None:
            if launch.expected_workers == 0:
                raise LocalModeError(
                    "worker.replicas is 0 in these values: no worker would run the study; "
                    "set worker.replicas >= 1 (e.g. --set worker.replicas=1)")
            check_direct_dependencies(study, launch)
        values = " ".join(f"-f {v}" for v in args.values) or "(chart defaults)"
        echo(f"local mode: helm template {args.release} {chart} {values}"
             + "".join(f" --set {s}" for s in args.set))
        echo(f"mode: {launch.config.summary()}")
        echo(f"workers: {launch.describe()}")
        for notice in launch.notices:
            echo(f"notice: {notice}")
        with LocalCluster(launch, echo, start_timeout=args.start_timeout) as cluster:
            client = cluster.client()
            echo(f"scheduler: {cluster.address}  dashboard: {client.dashboard_link}")
            echo(f"logs: {launch.run_dir / 'logs'}")
            code = 0
            if study is not None:
                code = run_and_report(
                    client, study, launch, echo, sims=args.sims,
                    progress=not args.no_progress, results=args.results, values=args.values,
                    sets=args.set, baseline=baseline)
            if args.keep:
                echo(f"cluster is up: Client({cluster.address!r}) or --scheduler-file "
                     f"{launch.scheduler_file}; workers fetch bundles from "
                     f"{launch.bundle_repo} (`modelops-runtime bundle pack DIR --repo "
                     f"{launch.bundle_repo}`); press Ctrl-C to stop it")
                while True:
                    cluster.check_running()
                    time.sleep(0.5)
            echo("stopping the local cluster ...")
        echo(f"stopped; every local process is gone. total time {time.perf_counter() - t0:.1f} s")
        return code
    except _Terminated:
        print("terminated: the local cluster was stopped, no process is left", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted: the local cluster was stopped, no process is left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)

