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

Also here: the ``modelops-runtime local`` sub-command and the small study description
(``--study``, see runtime/examples/sir/README.md) it runs on the local cluster.
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import PREFIX, RuntimeConfig, parse_bytes
from .errors import ModelOpsError
from .models import SimResult, SimTask, check_entrypoint

HELM_ENV = "MODELOPS_HELM"   # CLI setting (which helm binary), not a runtime setting
DEFAULT_RELEASE = "modelops-dask"
LOCALHOST = "127.0.0.1"
SCHEDULER_TOKEN = "{scheduler_address}"   # replaced by the local scheduler's address at start
KEEP_RUNS = 5                             # run dirs (logs) kept under <state>/runs
EXIT_DIFFERS = 3                          # --compare found seeds with different outputs

Echo = Callable[[str], None]


class LocalModeError(ModelOpsError):
    """The local cluster could not be prepared, started or run."""


class ChartRenderError(LocalModeError):
    """``helm template`` rejected the chart with these values. Fields: helm_output."""


def _echo(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------
# helm: find the chart and the binary, render
# ---------------------------------------------------------------------------------

def find_chart(start: Path | None = None) -> Path:
    """The repository's ``chart/``: searched upwards from ``start``; without ``start``, from
    the current directory and then next to this package's source tree (editable installs)."""
    here = Path.cwd() if start is None else Path(start)
    candidates = [p / "chart" for p in (here, *here.resolve().parents)]
    if start is None:
        candidates.append(Path(__file__).resolve().parents[3] / "chart")
    for cand in candidates:
        if (cand / "Chart.yaml").is_file():
            return cand
    raise LocalModeError(
        f"no Helm chart found: looked for chart/Chart.yaml in {here} and its parents; "
        "run from the modelops-dask repository or pass --chart PATH")


def find_helm(chart: Path) -> str:
    """$MODELOPS_HELM, else the repository's pinned ``.tools/bin/helm``, else ``helm`` on PATH."""
    override = os.environ.get(HELM_ENV)
    if override:
        found = shutil.which(override)
        if not found:
            raise LocalModeError(
                f"{HELM_ENV}={override!r} is not an executable; point it at a helm 3 or 4 "
                "binary or unset it")
        return found
    pinned = Path(chart).resolve().parent / ".tools" / "bin" / "helm"
    if os.access(pinned, os.X_OK):
        return str(pinned)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    raise LocalModeError(
        "helm not found: the local mode renders the chart with helm. Run `make tools` "
        f"(installs the pinned helm into .tools/bin), put helm on PATH, or set {HELM_ENV}")


def render(chart: Path, values: Sequence[Path | str] = (), sets: Sequence[str] = (),
           release: str = DEFAULT_RELEASE) -> list[dict]:
    """``helm template`` → the rendered manifests. A values file the chart's schema rejects
    raises :class:`ChartRenderError` carrying helm's own message."""
    for v in values:
        if not Path(v).is_file():
            raise LocalModeError(
                f"values file {v} does not exist; pass an existing file with -f "
                "(the presets are in values-examples/)")
    argv = [find_helm(chart), "template", release, str(chart)]
    for v in values:
        argv += ["-f", str(v)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())
        raise ChartRenderError(
            f"the chart rejected these values (helm template exited {proc.returncode}); "
            f"nothing was started. Fix the values and try again. helm said:\n{output}",
            helm_output=output)
    return [d for d in yaml.safe_load_all(proc.stdout) if isinstance(d, dict)]


# ---------------------------------------------------------------------------------
# the rendered containers (typed view of what the chart promises)
# ---------------------------------------------------------------------------------

class Container(BaseModel):
    """One rendered container: what a pod would run."""

    model_config = ConfigDict(frozen=True)

    command: list[str]
    args: list[str]
    env: dict[str, str]
    field_env: dict[str, str] = Field(
        default_factory=dict, description="env from the downward API: name → fieldPath")
    mounts: dict[str, str] = Field(
        default_factory=dict, description="volume mount path → volume name")


class RenderedCluster(BaseModel):
    """The scheduler and worker containers of one ``helm template``."""

    model_config = ConfigDict(frozen=True)

    scheduler: Container
    worker: Container
    replicas: int = Field(ge=0)

    @property
    def nworkers(self) -> int:
        """Dask worker processes per worker pod (``--nworkers``)."""
        raw = get_opt(self.worker.args, "--nworkers") or "1"
        try:
            n = int(raw)
        except ValueError:
            raise LocalModeError(
                f"the rendered worker has --nworkers {raw!r}; the local mode needs a fixed "
                "number of processes per pod (an integer >= 1) in the values") from None
        if n < 1:
            raise LocalModeError(f"the rendered worker has --nworkers {n}; expected >= 1")
        return n

    @property
    def nthreads(self) -> int:
        return int(get_opt(self.worker.args, "--nthreads") or 1)


def _component(doc: dict) -> str | None:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/component")


def _container(doc: dict, name: str) -> Container:
    spec = doc["spec"]["template"]["spec"]
    for c in spec.get("containers", []):
        if c.get("name") == name:
            break
    else:
        raise LocalModeError(
            f"the rendered {name} Deployment has no container named {name!r}; the chart "
            "breaks the local-mode render contract (see chart/ README)")
    env, field_env = {}, {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = "" if item["value"] is None else str(item["value"])
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            field_env[item["name"]] = item["valueFrom"]["fieldRef"].get("fieldPath", "")
        else:
            raise LocalModeError(
                f"the {name} container's env {item['name']} comes from "
                f"{sorted((item.get('valueFrom') or {}))}, which the local mode cannot "
                "resolve; the chart must render plain `value:` strings for local use")
    mounts = {m["mountPath"].rstrip("/") or "/": m["name"] for m in c.get("volumeMounts") or []}
    return Container(command=[str(x) for x in c.get("command") or []],
                     args=[str(x) for x in c.get("args") or []],
                     env=env, field_env=field_env, mounts=mounts)


def parse_rendered(docs: Sequence[dict]) -> RenderedCluster:
    """Pick the scheduler and worker Deployments out of the rendered manifests."""
    deployments = {}
    for doc in docs:
        if doc.get("kind") == "Deployment" and _component(doc) in ("scheduler", "worker"):
            deployments[_component(doc)] = doc
    missing = sorted({"scheduler", "worker"} - set(deployments))
    if missing:
        raise LocalModeError(
            f"the rendered chart has no {' and no '.join(missing)} Deployment (label "
            "app.kubernetes.io/component); is this the modelops-dask chart?")
    worker = deployments["worker"]
    replicas = worker["spec"].get("replicas", 1)
    return RenderedCluster(scheduler=_container(deployments["scheduler"], "scheduler"),
                           worker=_container(worker, "worker"),
                           replicas=1 if replicas is None else int(replicas))


def render_cluster(values: Sequence[Path | str] = (), sets: Sequence[str] = (), *,
                   chart: Path | None = None, release: str = DEFAULT_RELEASE) -> RenderedCluster:
    chart = find_chart() if chart is None else Path(chart)
    return parse_rendered(render(chart, values, sets, release))


# ---------------------------------------------------------------------------------
# argv helpers (both `--opt value` and `--opt=value` forms, as click accepts them)
# ---------------------------------------------------------------------------------

def _find(args: Sequence[str], opt: str) -> tuple[int, bool] | None:
    for i, a in enumerate(args):
        if a == opt and i + 1 < len(args):
            return i, False
        if a.startswith(opt + "="):
            return i, True
    return None


def get_opt(args: Sequence[str], opt: str) -> str | None:
    hit = _find(args, opt)
    if hit is None:
        return None
    i, joined = hit
    return args[i].split("=", 1)[1] if joined else args[i + 1]


def set_opt(args: list[str], opt: str, value: str) -> list[str]:
    """Replace the option's value in place (or append it), keeping the rest of argv."""
    out = drop_opt(list(args), opt)
    hit = _find(args, opt)
    if hit is None:
        return out + [opt, value]
    i = hit[0]
    return out[:i] + [opt, value] + out[i:]


def drop_opt(args: list[str], opt: str) -> list[str]:
    hit = _find(args, opt)
    if hit is None:
        return list(args)
    i, joined = hit
    return list(args[:i]) + list(args[i + (1 if joined else 2):])


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command/args/env (``$$`` escapes)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, text)


# ---------------------------------------------------------------------------------
# launch plan: the rendered containers rewritten for this machine
# ---------------------------------------------------------------------------------

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
        self._seen: dict[int, float] = {}   # pid → create_time: every process of our trees
        self._lock = threading.Lock()
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
        started = _Started(spec, popen)
        self._track()
        return started

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
            self._check_alive([self.scheduler])
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

    def _check_alive(self, procs: Sequence[_Started]) -> None:
        for s in procs:
            code = s.popen.poll()
            if code is not None:
                raise LocalModeError(
                    f"the local {s.spec.name} exited with code {code} during startup; "
                    f"its log ({s.spec.log}):\n{_tail(s.spec.log)}")

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
                self._check_alive([self.scheduler, *self.workers])
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
            try:
                root = psutil.Process(s.popen.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    with self._lock:
                        self._seen.setdefault(proc.pid, proc.create_time())

    def _track_loop(self) -> None:
        while not self._stop_tracking.wait(0.25):
            with contextlib.suppress(Exception):
                self._track()

    def pids(self) -> set[int]:
        """Every pid our processes have had so far (scheduler, nannies, worker processes,
        warm processes)."""
        self._track()
        with self._lock:
            return set(self._seen)

    def alive(self) -> list[psutil.Process]:
        """Processes we started (directly or not) that are still running."""
        self._track()
        out = []
        with self._lock:
            seen = dict(self._seen)
        for pid, created in seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def check_running(self) -> None:
        """Raise if the scheduler or a worker command has exited."""
        for s in self.started:
            code = s.popen.poll()
            if code is not None:
                raise LocalModeError(
                    f"the local {s.spec.name} exited with code {code}; its log "
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
        with self._lock:
            seen = dict(self._seen)
        gone_deadline = time.monotonic() + 10
        for pid, created in seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.wait(max(0.1, gone_deadline - time.monotonic()))
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
# the study: a small description `local --study` reads (see runtime/examples/sir/README.md)
# ---------------------------------------------------------------------------------

STUDY_FILE = "study.yaml"


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

    @property
    def key_name(self) -> str:
        """The study name as a Dask key part (letters, digits, '_' and '.')."""
        return re.sub(r"[^A-Za-z0-9_.]", "_", self.name)


class SimRecord(BaseModel):
    """One simulation's seed and result, as written to ``--results``."""

    seed: int
    result: SimResult


class FailureRecord(BaseModel):
    seed: int
    error_type: str
    message: str


class StudyRun(BaseModel):
    """What one study run produced (and how it was executed)."""

    study: str
    bundle: str
    sims: list[SimRecord]
    failures: list[FailureRecord]
    aggregate: SimResult | None
    aggregate_error: str | None = None
    nthreads: dict[str, int]        # client.nthreads(): Dask worker address → threads
    worker_pids: dict[str, int]     # Dask worker address → pid of that worker process
    pool_stats: dict[str, Any]
    elapsed_s: float


def pack_study(study: Study, repo: Path) -> str:
    from .bundles import pack

    return pack(study.bundle, str(repo))


def run_study(client, study: Study, bundle_repo: Path, *, sims: int | None = None,
              progress: bool = True) -> StudyRun:
    """Pack the study's bundle, run its sims with a progress bar, then its aggregation
    (over the successful sims only: failures are reported apart, never hidden)."""
    from .client import aggregate, gather_study, submit

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
    elapsed = time.perf_counter() - started
    return StudyRun(study=study.name, bundle=ref, sims=records, failures=failures,
                    aggregate=agg, aggregate_error=agg_error, nthreads=nthreads,
                    worker_pids=worker_pids,
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
        from .stats import cluster_stats

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
    from .bundles import read_dependencies
    from .config import ExecutorType

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
# CLI: modelops-runtime local
# ---------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser(
        "local", help="run the chart's scheduler and workers as local processes",
        description="Render chart/ with helm from the given values files and start its "
                    "scheduler and worker containers (command, args, env) as local "
                    "processes on 127.0.0.1: the same configuration the pods get. Then run "
                    "a study (--study) and stop, or keep the cluster up (--keep) until "
                    "Ctrl-C. No process is left behind.")
    p.add_argument("-f", "--values", action="append", default=[], type=Path, metavar="VALUES",
                   help="values file (repeatable, later files win; like helm -f)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="value override (repeatable; like helm --set)")
    p.add_argument("--study", type=Path, metavar="PATH",
                   help=f"study to run: a directory with {STUDY_FILE} or a study file")
    p.add_argument("--sims", type=int, metavar="N", help="number of seeds (default: the study's)")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="write every result with its execution metadata as JSON")
    p.add_argument("--compare", type=Path, metavar="FILE",
                   help="compare the outputs seed by seed with an earlier --results FILE "
                        f"(exit {EXIT_DIFFERS} if any differ): does this mode change results?")
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
        return 2
    if not args.study and not args.keep:
        print("error: nothing to do: give --study PATH (run it, then stop) and/or --keep "
              "(keep the cluster up until Ctrl-C)", file=sys.stderr)
        return 2
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
                code = _run_and_report(client, study, launch, args, echo, baseline)
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
        return 143
    except KeyboardInterrupt:
        print("interrupted: the local cluster was stopped, no process is left", file=sys.stderr)
        return 130
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_and_report(client, study: Study, launch: LaunchPlan, args, echo: Echo,
                    baseline: dict[int, Any] | None = None) -> int:
    n = args.sims or study.sims
    echo(f"study {study.name}: {n} seeded sims of {study.entrypoint} "
         f"(seeds {study.first_seed}..{study.first_seed + n - 1})"
         + (f", then {study.aggregate}" if study.aggregate else ""))
    run = run_study(client, study, launch.bundle_repo, sims=n, progress=not args.no_progress)
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
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({
            "values": [str(v) for v in args.values], "sets": list(args.set),
            "mode": launch.config.summary(), "config": launch.config.as_env(),
            "expected_workers": launch.expected_workers,
            "expected_threads": launch.expected_threads,
            **run.model_dump(mode="json"),
        }, indent=1))
        echo(f"results: {args.results}")
    code = 0 if not run.failures and (run.aggregate is not None or not study.aggregate) else 1
    if baseline is not None:
        differ, common = compare_outputs(run, baseline)
        if differ:
            shown = ", ".join(map(str, differ[:10])) + (" ..." if len(differ) > 10 else "")
            echo(f"compare: {len(differ)} of {common} seeds give different outputs than "
                 f"{args.compare} (seeds {shown}): this mode changes the results")
            code = code or EXIT_DIFFERS
        else:
            echo(f"compare: all {common} common seeds give the same outputs as {args.compare}")
    return code


def load_baseline(path: Path) -> dict[int, Any]:
    """Outputs by seed from an earlier ``--results`` file."""
    try:
        data = json.loads(Path(path).read_text())
        return {int(s["seed"]): s["result"]["outputs"] for s in data["sims"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalModeError(
            f"--compare {path}: not a results file ({type(exc).__name__}: {exc}); pass a "
            "file written by an earlier run with --results") from None


def compare_outputs(run: StudyRun, baseline: Mapping[int, Any]) -> tuple[list[int], int]:
    """Seeds (present in both) whose outputs differ; compared as JSON, as stored."""
    now = {r.seed: json.loads(json.dumps(r.result.outputs, default=str)) for r in run.sims}
    common = sorted(set(now) & set(baseline))
    return [s for s in common if now[s] != baseline[s]], len(common)
