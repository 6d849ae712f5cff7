"""Helpers of the end-to-end tests: the presets as the values files define them, and the
real `modelops-runtime local` CLI run as a subprocess whose every descendant is recorded
(so a test can prove by pid that nothing was left behind)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from modelops_runtime.local.cluster.supervise import ProcessRecord
from support.paths import CHART, PRESETS, REPO  # noqa: F401 - the e2e tests' names
from support.paths import PRESETS_DIR as PRESET_DIR

STUDY = Path(__file__).resolve().parent / "sir_study"
CLI = str(Path(sys.executable).parent / "modelops-runtime")

# the e2e bundle's one third-party dependency: the daily chain-binomial step
SIRSTEPS = '''
"""One day of a chain-binomial SIR model (test wheel)."""
import math

VERSION = "1.0"


def _binomial(n, p, rng):
    return sum(1 for _ in range(n) if rng.random() < p)


def step(susceptible, infected, population, beta, gamma, rng):
    new_infected = _binomial(susceptible, 1.0 - math.exp(-beta * infected / population), rng)
    recovered = _binomial(infected, 1.0 - math.exp(-gamma), rng)
    return susceptible - new_infected, infected + new_infected - recovered
'''


# -- the presets, read from the values files (not from the code under test) ----------------

@dataclass(frozen=True)
class Preset:
    name: str
    file: Path
    replicas: int
    processes: int
    threads: int
    executor: str
    force_fresh_venv: bool
    max_process_reuse: int

    @property
    def worker_processes(self) -> int:
        return self.replicas * self.processes


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset(name: str) -> Preset:
    """The mode a preset selects: chart defaults overridden by the preset file."""
    file = PRESET_DIR / f"{name}.yaml"
    values = _merge(yaml.safe_load((CHART / "values.yaml").read_text()),
                    yaml.safe_load(file.read_text()) or {})
    w = values["worker"]
    return Preset(name=name, file=file, replicas=int(w["replicas"] or 1),  # null: 1
                  processes=int(w["processes"]), threads=int(w["threads"]),
                  executor=w["executor"]["type"],
                  force_fresh_venv=bool(w["executor"]["forceFreshVenv"]),
                  max_process_reuse=int(w["executor"]["maxProcessReuse"]))

# -- running the CLI and watching every process it starts ---------------------------------

@dataclass
class LocalRun:
    """A `modelops-runtime local` subprocess; every descendant pid it ever had is recorded."""

    popen: subprocess.Popen
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    record: ProcessRecord = field(default_factory=ProcessRecord)   # the CLI's descendants
    readers: list[threading.Thread] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    @property
    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr[-6000:]}"

    def watch(self) -> None:
        while not self._done.is_set():
            self.record.add_tree(self.popen.pid, include_root=False)
            time.sleep(0.05)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.popen.poll() is not None:
                self.wait(10)
                raise AssertionError(f"the CLI exited ({self.popen.returncode}) before "
                                     f"printing {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout:.0f}s:\n{self.output}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._done.set()
        for t in self.readers:   # the pipes are drained once the process has exited
            t.join(10)
        return code

    def alive(self) -> list[psutil.Process]:
        """Recorded processes that still run (same pid *and* start time, not a zombie)."""
        return self.record.alive()

    def cleanup(self) -> None:
        """Test teardown: whatever happened, nothing of ours survives."""
        self._done.set()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(30)
        left = self.alive()
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=10)


def assert_nothing_left(run: LocalRun) -> None:
    """Every process the CLI started (scheduler, nannies, worker and warm processes) is gone."""
    deadline = time.monotonic() + 10   # reaping by init after the CLI exited is asynchronous
    while (left := run.alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(run.record.seen()) >= 2, f"no cluster processes were ever seen:\n{run.output}"
    assert not left, "processes left behind: " + ", ".join(
        f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in left)


class LocalCli:
    """Runs `modelops-runtime local` as a user would (own session, pipes read live)."""

    def __init__(self) -> None:
        self.runs: list[LocalRun] = []

    def start(self, args: list, env: dict[str, str], command: str = "local") -> LocalRun:
        popen = subprocess.Popen([CLI, command, *map(str, args)], env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        run = LocalRun(popen)
        self.runs.append(run)
        for stream, sink in ((popen.stdout, run.stdout_lines), (popen.stderr, run.stderr_lines)):
            t = threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")),
                                 daemon=True)
            t.start()
            run.readers.append(t)
        threading.Thread(target=run.watch, daemon=True).start()
        return run

    def run(self, args: list, env: dict[str, str], timeout: float = 400,
            command: str = "local") -> LocalRun:
        r = self.start(args, env, command)
        try:
            r.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`modelops-runtime {command}` did not finish in {timeout}s:\n"
                                 f"{r.output}") from None
        return r

    def cleanup(self) -> None:
        for r in self.runs:
            r.cleanup()


