"""A stand-in for the kubelet of one worker Deployment: the pods the API server holds for it
run as local `dask worker` processes (the chart's rendered worker command, one per pod), and
a pod the ReplicaSet controller deletes gets SIGTERM, then SIGKILL after the pod's
terminationGracePeriodSeconds, as a kubelet does.

- covers: :class:`Kubelet` (a thread that follows the pods every POLL seconds and records
  what it did as :class:`Event` lines), per-pod emptyDir volumes (a new pod starts with an
  empty venv cache, as on a node), and the rendered scheduler as a local process.
- does not: schedule, probe, or restart anything; SIGTERM goes to the container's first
  process (`dask worker`), not to its group, as the container runtime sends it.
- see also: support/keda.py, test_loop.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelops_runtime.local.cluster.launch import SCHEDULER_TOKEN, LaunchPlan, ProcessSpec
from support.cluster import Proc, ProcessCluster, tail, wait_for
from support.controlplane import ControlPlane

POLL = 0.5  # s between two reads of the pods


@dataclass(frozen=True)
class Event:
    at: float      # time.monotonic()
    wall: float    # time.time(), to compare with times taken in other processes
    what: str      # "start", "sigterm", "sigkill", "exit"
    pod: str
    detail: str = ""


@dataclass
class Kubelet:
    plane: ControlPlane
    namespace: str
    selector: str                 # the worker Deployment's label selector (a=b,c=d)
    plan: LaunchPlan              # the rendered chart as local processes (one worker spec)
    grace: float                  # the pod template's terminationGracePeriodSeconds
    cluster: ProcessCluster = field(init=False)
    pods: dict[str, Proc] = field(default_factory=dict)        # live pod → its worker
    terminating: dict[str, tuple[Proc, float]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.cluster = ProcessCluster(root=self.plan.run_dir, env={})

    # -- the scheduler (a pod of the scheduler Deployment, started by the test) -----------
    def start_scheduler(self, dashboard_port: int) -> str:
        p = self.plan
        for d in (p.run_dir, Path(p.bundle_repo)):
            d.mkdir(parents=True, exist_ok=True)
        argv = [a if a != f"127.0.0.1:0" else f"127.0.0.1:{dashboard_port}"
                for a in p.scheduler.argv]
        assert f"127.0.0.1:{dashboard_port}" in argv, argv
        self.cluster.scheduler = self._spawn(p.scheduler, argv, "scheduler")
        popen = self.cluster.scheduler.popen
        wait_for(lambda: (p.scheduler_file.exists() and p.scheduler_file.stat().st_size > 0)
                 or popen.poll() is not None, 120, "the rendered scheduler to start",
                 interval=0.1, on_fail=self.cluster.logs)
        if popen.poll() is not None:
            raise AssertionError(f"the scheduler exited with {popen.returncode}:\n"
                                 f"{tail(self.cluster.scheduler.log)}")
        self.cluster.address = wait_for(self._address, 30, "the scheduler file")
        return self.cluster.address

    def _address(self) -> str | None:
        try:
            return json.loads(self.plan.scheduler_file.read_text())["address"]
        except (ValueError, KeyError):
            return None

    # -- following the pods ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self.sync()
            except BaseException as exc:  # noqa: BLE001 - reported by check()
                self.errors.append(exc)
                return

    def check(self) -> None:
        """Raise what went wrong in the thread."""
        if self.errors:
            raise AssertionError(f"the kubelet stand-in failed: {self.errors[0]!r}")

    def sync(self) -> None:
        items = self.plane.api(f"/api/v1/namespaces/{self.namespace}/pods"
                               f"?labelSelector={self.selector}")["items"]
        live = {i["metadata"]["name"] for i in items
                if not i["metadata"].get("deletionTimestamp")}
        with self._lock:
            for pod in sorted(live - set(self.pods)):
                self._start_pod(pod)
            for pod in sorted(set(self.pods) - live):
                self._terminate(pod)
            now = time.monotonic()
            for pod, (proc, since) in list(self.terminating.items()):
                code = proc.popen.poll()
                if code is not None:
                    self._record("exit", pod, str(code))
                    del self.terminating[pod]
                elif now - since > self.grace:
                    _killpg(proc.popen, signal.SIGKILL)
                    self._record("sigkill", pod)
            for pod, proc in self.pods.items():
                code = proc.popen.poll()
                if code is not None:
                    raise AssertionError(f"the worker of pod {pod} exited with {code} while "
                                         f"its pod exists:\n{tail(proc.log, 40)}")

    def _start_pod(self, pod: str) -> None:
        spec = self._pod_spec(pod)
        argv = [self.cluster.address if a == SCHEDULER_TOKEN else a for a in spec.argv]
        self.pods[pod] = self._spawn(spec, argv, pod)
        self.cluster.workers.append(self.pods[pod])
        self._record("start", pod)

    def _terminate(self, pod: str) -> None:
        proc = self.pods.pop(pod)
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)   # unreaped: the pid is still ours
        self.terminating[pod] = (proc, time.monotonic())
        self._record("sigterm", pod)

    def _pod_spec(self, pod: str) -> ProcessSpec:
        """The plan's worker with this pod's own emptyDirs, scratch and Dask directory."""
        p = self.plan
        base = p.workers[0]
        own = p.run_dir / "pods" / pod
        swaps = {str(p.state_dir / "volumes" / v): str(own / v)
                 for v in p.rendered.worker.empty_dirs}
        swaps[str(p.run_dir / "tmp" / "worker-0")] = str(own / "tmp-scratch")
        swaps[str(p.run_dir / "dask" / "worker-0")] = str(own / "dask")

        def local(value: str) -> str:
            for old, new in swaps.items():
                if value == old or value.startswith(old + "/"):
                    return new + value[len(old):]
            return value

        for new in swaps.values():
            Path(new).mkdir(parents=True, exist_ok=True)
        env = {k: local(v) for k, v in base.env.items()}
        env.update({k: pod for k, path in p.rendered.worker.field_env.items()
                    if path == "metadata.name"})    # the downward API's pod name
        return ProcessSpec(name=pod, argv=[local(a) for a in base.argv], env=env,
                           log=p.run_dir / "logs" / f"{pod}.log")

    def _spawn(self, spec: ProcessSpec, argv: list[str], name: str) -> Proc:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with spec.log.open("wb") as log:
            popen = subprocess.Popen(argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return Proc(name, popen, spec.log)

    def _record(self, what: str, pod: str, detail: str = "") -> None:
        self.events.append(Event(time.monotonic(), time.time(), what, pod, detail))

    # -- views and teardown ----------------------------------------------------------------
    def running(self) -> list[str]:
        with self._lock:
            return sorted(self.pods)

    def timeline(self, t0: float) -> str:
        return "\n".join(f"  {e.at - t0:7.1f}s {e.what:8} {e.pod} {e.detail}".rstrip()
                         for e in list(self.events))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.cluster.stop()


def _killpg(popen: subprocess.Popen, sig: int) -> None:
    if popen.returncode is None:
        try:
            os.killpg(popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
