"""What a thread waiting on a warm process checks: deadline, liveness, and why it died."""

from __future__ import annotations

import time

from ...errors import MemoryLimitExceeded, ProcessCrashed, TaskTimeout, WorkerStopping
from ..counters import RemovalReason
from .failures import Lost, describe_exit
from .guard import waiting_for_answer
from .memory import mb

TICK = 0.05  # s between liveness/deadline checks of a busy process


class Watch:
    """Deadline and liveness checks while a thread waits on ``proc`` (a
    :class:`~.process.WarmProcess`). The memory limit is the pool's sampler's: it kills a
    tree over the limit, and the death is reported here as MemoryLimitExceeded."""

    def __init__(self, proc, timeout: float | None, mem_limit: int | None,
                 label: str, mark: int | None) -> None:
        self.proc = proc
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.mem_limit = mem_limit
        self.label = label
        self.mark = mark

    def check(self, alive: bool = True) -> None:
        if alive and self.proc.exited():
            raise self.died()
        if self.deadline is not None and time.monotonic() > self.deadline:
            waiting = waiting_for_answer(self.proc.pid)  # before the kill ends them
            self.proc.kill()
            why = ""
            if waiting:
                why = (f" It was waiting for the worker's signal guard to answer a new "
                       f"process or a signal (thread(s) {', '.join(waiting[:4])}): a bug of "
                       "the worker, not of the task.")
            raise Lost(RemovalReason.timeout, TaskTimeout(
                f"{self.label} did not finish within {self.timeout:g}s; its warm process "
                f"(pid {self.proc.pid}) was killed and will be replaced.{why} Make the task "
                "faster or raise the time limit (MODELOPS_TASK_TIMEOUT).",
                timeout_s=self.timeout, pid=self.proc.pid,
                log_tail=self.proc.log.tail(self.mark)))

    def died(self) -> Lost:
        """The process ended by itself (EOF/EPIPE on its pipes, or it exited), was killed
        over its memory limit, or the worker is shutting down and stopped it."""
        if not self.proc.wait_exit(5.0):
            self.proc.kill()  # its pipes are closed but it lingers: it is lost anyway
            self.proc.wait_exit(5.0)
        how, code, sig = describe_exit(self.proc.exit_status())
        tail = self.proc.log.tail(self.mark)
        peak = self.proc.memory_exceeded
        if peak is not None and self.mem_limit is not None:
            return Lost(RemovalReason.mem_limit, MemoryLimitExceeded(
                f"{self.label} used {mb(peak)} (memory of its process tree), over "
                f"MODELOPS_MEM_LIMIT_BYTES={self.mem_limit} ({mb(self.mem_limit)}); its "
                f"warm process (pid {self.proc.pid}) was killed and will be replaced. "
                "Reduce the model's memory use or raise the limit.",
                limit_bytes=self.mem_limit, peak_bytes=peak, pid=self.proc.pid,
                log_tail=tail))
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
