"""A study's progress that stays true over hours: runs done of the total (resumed runs
included), failures, sets complete, the measured rate and an ETA from it.

- covers: a tqdm bar on a terminal; plain lines (one every ``every`` seconds, and a last
  one) when the output is not a terminal, so logs stay readable.
- covers: a study submitted in sets (``submit_study``) and a plain list of futures
  (``sets=None``: no sets to count).
- does not: count anything itself (the caller says what finished).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

RATE_WINDOW = 300.0   # s of recent runs the rate (and so the ETA) is measured over
LINE_EVERY = 30.0     # s between plain lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class StudyProgress:
    """Call :meth:`run` per finished run, :meth:`close` at the end."""

    def __init__(self, desc: str, total: int, *, sets: int | None, done: int = 0,
                 failed: int = 0,
                 sets_done: int = 0, enabled: bool = True, file: TextIO | None = None,
                 every: float = LINE_EVERY, tty: bool | None = None,
                 clock=time.monotonic) -> None:
        self.desc, self.total, self.sets = desc, total, sets
        self.done, self.failed, self.sets_done = done, failed, sets_done
        self.enabled, self.every = enabled, every
        self.file = file or sys.stderr
        self.tty = self.file.isatty() if tty is None else tty
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._times: deque[tuple[float, int]] = deque([(self._start, done)])
        self._bar = None
        if enabled and self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=desc, unit="run", file=self.file)

    def rate(self) -> float | None:
        """Runs per second over the last RATE_WINDOW seconds (None: not measured yet)."""
        (t0, n0), (t1, n1) = self._times[0], self._times[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.desc}: {self.done:,} of {self.total:,} runs done ({pct:.1f} %), "
                f"{self.failed:,} failed")
        if self.sets is not None:
            text += f", sets complete {self.sets_done:,}/{self.sets:,}"
        rate = self.rate()
        if rate and self.done < self.total:
            text += f", {rate:,.1f} runs/s, ETA {_duration((self.total - self.done) / rate)}"
        return text

    def _postfix(self) -> str:
        sets = f", sets {self.sets_done}/{self.sets}" if self.sets is not None else ""
        return f"failed {self.failed}{sets}"

    def run(self, ok: bool, set_complete: bool = False) -> None:
        self.done += 1
        self.failed += not ok
        self.sets_done += set_complete
        if not self.enabled:
            return
        now = self._clock()
        if now - self._times[-1][0] >= 1.0:
            self._times.append((now, self.done))
            while now - self._times[0][0] > RATE_WINDOW and len(self._times) > 2:
                self._times.popleft()
        if self._bar is not None:
            self._bar.update(1)
            if set_complete or not ok or now - self._last_line >= 1.0:
                self._last_line = now
                self._bar.set_postfix_str(self._postfix())
        elif now - self._last_line >= self.every:
            self._last_line = now
            self._times.append((now, self.done))
            print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix())
            self._bar.close()
        else:
            elapsed = _duration(self._clock() - self._start)
            print(f"{self.line()} (in {elapsed})", file=self.file, flush=True)
