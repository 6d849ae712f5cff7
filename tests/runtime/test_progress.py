"""A study's progress when the output is not a terminal: plain lines (no carriage
returns, no redraws) saying runs done of the whole study (resumed runs included),
failures, sets complete, the measured rate and the ETA from it."""

from __future__ import annotations

import io

from modelops_runtime.client.progress import StudyProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_tell_done_failed_sets_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    bar = StudyProgress("sweep", 100_000, sets=100, done=61_204, failed=4, sets_done=61,
                        file=out, tty=False, every=30.0, clock=clock)
    for i in range(600):                 # 8 runs/s for 75 s, one set completes
        clock.now += 0.125
        bar.run(ok=i != 5, set_complete=i == 599)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == ("sweep: 61,444 of 100,000 runs done (61.4 %), 5 failed, sets "
                        "complete 61/100, 8.0 runs/s, ETA 1 h 20 min")
    assert lines[-1] == ("sweep: 61,804 of 100,000 runs done (61.8 %), 5 failed, sets "
                         "complete 62/100, 8.0 runs/s, ETA 1 h 19 min (in 1 min 15 s)")
    assert len(lines) == 3                # one every 30 s, and the last


def test_no_lines_when_disabled():
    out = io.StringIO()
    bar = StudyProgress("s", 10, sets=1, file=out, tty=False, enabled=False, every=0)
    for _ in range(10):
        bar.run(ok=True)
    bar.close()
    assert out.getvalue() == ""


def test_a_list_of_futures_has_no_sets_to_count():
    out, clock = io.StringIO(), Clock()
    bar = StudyProgress("runs", 10, sets=None, file=out, tty=False, every=30.0, clock=clock)
    for _ in range(10):
        bar.run(ok=True)
    bar.close()
    assert out.getvalue() == "runs: 10 of 10 runs done (100.0 %), 0 failed (in 0 s)\n"
