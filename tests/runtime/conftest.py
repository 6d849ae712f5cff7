"""Fixtures for the runtime tests."""

from __future__ import annotations

import psutil
import pytest

from support.cluster import wait_for


def alive(pids) -> list[int]:
    """The pids that still run (zombies awaiting their parent's wait() count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def wait_gone():
    """``wait_gone(pids)``: fail unless every pid exits within a bounded wait."""
    def check(pids, timeout: float = 60) -> None:
        pids = set(pids)
        wait_for(lambda: not alive(pids), timeout, f"processes {sorted(pids)} to exit",
                 on_fail=lambda: f"still alive: {alive(pids)}")
    return check
