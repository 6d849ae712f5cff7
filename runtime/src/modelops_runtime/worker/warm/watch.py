"""What a thread waiting on a warm process checks: deadline, memory limit, liveness."""

from __future__ import annotations

import time

from ...errors import MemoryLimitExceeded, ProcessCrashed, TaskTimeout, WorkerStopping
from ..stats import RemovalReason
from .failures import Lost, describe_exit
from .memory import _mb

TICK = 0.05                        # s between liveness/deadline checks of a busy process
MEM_SAMPLE = 0.1                   # s between RSS samples of a busy process tree


class _Watch:
    """Deadline, memory limit and liveness checks while a thread waits on ``proc`` (a
    :class:`~.process.WarmProcess`)."""

    def __init__(self, proc, timeout: float | None, mem_limit: int | None,
                 label: str, mark: int | None) -> None:
        self.proc = proc
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.mem_limit = mem_limit
        self.label = label
        self.mark = mark
        self.peak = 0
        self.next_sample = 0.0

    def check(self, alive: bool = True) -> None:
        now = time.monotonic()
        if alive and self.proc.exited():
            raise self.died()
        if self.mem_limit is not None and now >= self.next_sample:
            self.next_sample = now + MEM_SAMPLE
            rss = self.proc.tree_rss()
            self.peak = max(self.peak, rss)
            if rss > self.mem_limit:
                self.proc.stop(graceful=False)
                raise Lost(RemovalReason.mem_limit, MemoryLimitExceeded(
                    f"{self.label} used {_mb(self.peak)} (RSS of its process tree), over "
                    f"MODELOPS_MEM_LIMIT_BYTES={self.mem_limit} ({_mb(self.mem_limit)}); its "
                    f"warm process (pid {self.proc.pid}) was killed and will be replaced. "
                    "Reduce the model's memory use or raise the limit.",
                    limit_bytes=self.mem_limit, peak_bytes=self.peak, pid=self.proc.pid,
                    log_tail=self.proc.log.tail(self.mark)))
        if self.deadline is not None and now > self.deadline:
            self.proc.stop(graceful=False)
            raise Lost(RemovalReason.timeout, TaskTimeout(
                f"{self.label} did not finish within {self.timeout:g}s; its warm process "
                f"(pid {self.proc.pid}) was killed and will be replaced. Make the task "
                "faster or raise the time limit (MODELOPS_TASK_TIMEOUT).",
                timeout_s=self.timeout, pid=self.proc.pid,
                log_tail=self.proc.log.tail(self.mark)))

    def died(self) -> Lost:
        """The process ended by itself (EOF/EPIPE on its pipes, or it exited), or the
        worker is shutting down and stopped it."""
        self.proc._wait_exit(5.0)
        how = self.proc.stop(graceful=False)
        text, code, sig = describe_exit(self.proc.popen.returncode)
        tail = self.proc.log.tail(self.mark)
        if self.proc.worker_stopping:
            return Lost(RemovalReason.shutdown, WorkerStopping(
                f"{self.label} was interrupted because this Dask worker process is shutting "
                "down (a helm upgrade or rollout replacing the pod, a scale-down, a node "
                f"drain, or the worker told to close); its warm process (pid {self.proc.pid}) "
                "was stopped with it. Nothing is wrong with the task: Dask normally runs it "
                "again on another worker; if this error reached you, submit it again once "
                "workers are back.", pid=self.proc.pid, log_tail=tail))
        shown = tail if tail.strip() else "(the process wrote nothing)"
        return Lost(RemovalReason.crash, ProcessCrashed(
            f"the warm process (pid {self.proc.pid}) running {self.label} died: {how}. "
            "The task failed; the process is replaced and the worker is unaffected. A crash "
            "in native code, os._exit() or an external kill are the usual causes; the "
            f"process's last output:\n{shown}",
            exit_code=code, signal_name=sig, pid=self.proc.pid, log_tail=tail))
