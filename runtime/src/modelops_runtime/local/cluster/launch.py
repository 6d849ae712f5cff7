"""The launch plan: the chart's rendered scheduler and worker containers rewritten to run as
local processes on this machine.

- covers: free ports, state and scratch dirs, volume paths, the bundle repo, memory limits.
- does not: render the chart (render.py) or start processes (supervise.py).
- see also: docs/design.md "Local mode" (what is rewritten and why nothing else is).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field

from ...bundles.access import client_env, protocol
from ...config import PREFIX, RuntimeConfig, parse_bytes
from ...errors import LocalModeError
from .argv import drop_opt, get_opt, set_opt
from .render import DEFAULT_RELEASE, HELM_ENV, Container, RenderedCluster

LOCALHOST = "127.0.0.1"
SCHEDULER_TOKEN = "{scheduler_address}"   # replaced by the local scheduler's address at start
KEEP_RUNS = 5                             # run dirs (logs) kept under <state>/runs
WRITABLE_ENV = PREFIX + "WARM_WRITABLE_PATHS"
CACHE_ENV = (PREFIX + "BUNDLE_CACHE_DIR", PREFIX + "VENVS_DIR")



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
    # <state>/bundle-repo, or the values' own URL repository (s3://...): bundles are
    # packed there and the workers fetch them from there
    bundle_repo: Path | str
    # what a client-side pack into a URL repository needs of the workers' environment
    # (their AWS_* variables: the values' bundles.credentials endpoint and region,
    # worker.extraEnv, and this shell's own, which the workers inherit)
    bundle_env: dict[str, str] = Field(default_factory=dict)
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

    def writable(self, value: str, state_dir: Path, caches: Sequence[str]) -> str:
        """MODELOPS_WARM_WRITABLE_PATHS for a local worker: each path of the list as the
        model reaches it here. A pod volume's path is both its local directory (what a
        rewritten variable such as TMPDIR or MY_CACHE points to) and the path itself (what
        a model opening e.g. ``/tmp/x`` reaches on this machine: there is no mount
        namespace). A path that would hold the state directory, or hold or lie in the
        bundle or venv cache (``caches``), is refused: tasks never write those."""
        granted: list[str] = []
        for path in (p for p in value.split(",") if p):
            for one in (self.path(path), path):
                here = Path(os.path.realpath(one))
                held = [str(c) for c in (state_dir, *map(Path, caches))
                        if c == here or here in c.parents
                        or (c != state_dir and c in here.parents)]
                if held:
                    raise LocalModeError(
                        f"worker.executor.writablePaths has {path}, which on this machine "
                        f"is, holds or lies in {held[0]} (the state directory, its bundle "
                        "and venv caches: never writable by tasks, bundles are immutable "
                        f"once published); pass --state-dir outside {path} or drop it")
                if one not in granted:
                    granted.append(one)
        return ",".join(granted)


def _quantity(text: str) -> float | None:
    """Bytes of a ``--memory-limit`` value (Kubernetes or Dask units); None for 'auto',
    fractions and anything else Dask resolves itself."""
    with contextlib.suppress(ValueError):
        return parse_bytes(text)
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
        if WRITABLE_ENV in c.env:  # a list of paths, each path also as itself (_Rewriter)
            caches = [where for v in CACHE_ENV  # as in the pod, and here
                      for where in (c.env.get(v), env.get(v)) if where]
            env[WRITABLE_ENV] = rw.writable(expand_refs(c.env[WRITABLE_ENV], env),
                                            state_dir, caches)
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

    # A URL repository in the values (s3://bucket/prefix) is used as is: the study's bundle
    # is packed there and the workers fetch it from there, with this shell's credentials
    # (and the values' endpoint and region); a Secret is not read locally.
    rendered_repo = w.env.get("MODELOPS_BUNDLE_REPO", "")
    repo: Path | str = bundle_repo
    if "://" in rendered_repo and protocol(rendered_repo) != "file":
        repo = rendered_repo
        secret = w.env.get("MODELOPS_BUNDLE_CREDENTIALS")
        if secret:
            notices.append(f"the workers' {secret} (bundles.credentials.secretName) is not "
                           "read locally: the local workers use this shell's AWS_* "
                           "variables for " + rendered_repo)
    worker_specs = []
    for i in range(rendered.replicas):
        pod = f"{release}-worker-local-{i}"
        env = container_env(w, w_rw, pod)
        env["MODELOPS_BUNDLE_REPO"] = str(repo)
        if isinstance(repo, str) and env.get("MODELOPS_BUNDLE_CREDENTIALS"):
            env["MODELOPS_BUNDLE_CREDENTIALS"] = "this shell's environment (local mode)"
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
                      scheduler_file=scheduler_file, bundle_repo=repo,
                      bundle_env=client_env(probe) if isinstance(repo, str) else {},
                      notices=notices)
