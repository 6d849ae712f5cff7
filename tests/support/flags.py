"""pytest plugin: process-wide flags a test (or its fixtures) set in this process are
restored after it, so no result depends on which tests ran before.

- covers: the child-subreaper flag (``PR_SET_CHILD_SUBREAPER``), which every in-process
  warm pool sets (worker/warm/orphans.py ``become_subreaper``): left set, pytest would
  adopt the orphans of every later test. Restored after each test's teardown.
- covers: SIGINT ignored by inheritance. A run started in the background of a script
  (`make test &`) starts pytest with SIGINT ignored, and every process a test starts would
  inherit that: the Ctrl-C tests would see a "terminal" that cannot interrupt. The
  session puts Python's own handler back, so children start with the default again.
- covers: SIGTERM (CI's timeout, a user's `kill`). By default it ends pytest at once and
  no fixture's teardown runs: the clusters the tests started (in sessions of their own)
  outlive it. The session turns the first SIGTERM into the KeyboardInterrupt of Ctrl-C,
  so every fixture is torn down; later ones do not interrupt that teardown (SIGKILL
  still ends it), and pytest exits with 143 (128 + SIGTERM), as a killed one would.
- does not: restore what a test changes through ``monkeypatch`` (pytest does that).
- see also: tests/harness/test_process_flags.py.
"""

from __future__ import annotations

import ctypes
import signal
import sys

import pytest

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def subreaper() -> bool | None:
    """Whether this process is a child subreaper (None: not Linux)."""
    if _libc is None:
        return None
    value = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(value.value)


def set_subreaper(on: bool) -> None:
    if _libc is not None and _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


_terminated: list[int] = []


def _on_sigterm(signum, frame) -> None:
    if not _terminated:
        _terminated.append(signum)
        raise KeyboardInterrupt("pytest got SIGTERM: tearing down what the tests started")


def pytest_configure(config) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # a Python handler, not SIG_IGN: children started meanwhile get the default back
        signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session) -> None:
    if _terminated:
        session.exitstatus = 128 + signal.SIGTERM


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    before = subreaper()
    try:
        return (yield)
    finally:
        if before is not None and subreaper() != before:
            set_subreaper(before)
