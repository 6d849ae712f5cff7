"""pytest plugin: nothing a test started outlives it, proven from outside the code under
test (support/leaks.py marks its processes and gives it a TMPDIR of its own).

- covers: one scope per test (setup, call and teardown) and one per setup of a fixture
  wider than a function (its processes live until that fixture is finalized, and are
  checked then). After the scope ends, a marked process still running (after a bounded
  wait) or anything left in its TMPDIR fails the test's teardown with what was found, and
  is then killed or removed, so the next test starts clean.
- does not: look at what a test puts in ``tmp_path`` (pytest's, kept on purpose) or in
  directories it names itself; the scopes' TMPDIR is for child processes (this process's
  ``tempfile`` keeps the directory it had at the session start).
- see also: tests/repo/test_leak_check.py.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest

from support.leaks import Scope, Session

_SESSION: Session | None = None
_numbers = itertools.count()
_open: list[tuple[object, Scope]] = []   # (fixturedef, scope) of wider fixtures set up


def session() -> Session | None:
    """The running session's marks (None before pytest configured this plugin)."""
    return _SESSION


def pytest_configure(config) -> None:
    global _SESSION
    if config.option.collectonly or _SESSION is not None:
        return
    base = Path(tempfile.gettempdir())  # also caches it: this process's tempfile keeps it
    _SESSION = Session(base)


def pytest_unconfigure(config) -> None:
    global _SESSION
    if _SESSION is not None:
        _SESSION.close()
        _SESSION = None


def pytest_report_header(config) -> str | None:
    if _SESSION is None:
        return None
    how = "environment mark + cgroup" if _SESSION.cgroup is not None else (
        f"environment mark only ({_SESSION.no_cgroup})")
    return f"leftover check: {how}; per-test TMPDIR under {_SESSION.root}"


def _problems(scope: Scope) -> str:
    lines = []
    if left := scope.wait_clean():
        lines.append(f"processes left behind: {scope.describe(left)}")
    if files := scope.leftover_files():
        lines.append(f"left in TMPDIR {scope.tmp}: {', '.join(files[:20])}")
    scope.kill()
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if _SESSION is None or fixturedef.scope == "function":
        return (yield)
    name = f"{fixturedef.scope}-{next(_numbers)}-{fixturedef.argname}"[:80]
    scope = Scope(_SESSION, name)
    _open.append((fixturedef, scope))
    scope.enter()
    try:
        return (yield)
    finally:
        scope.exit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _SESSION is None:
        return (yield)
    scope = Scope(_SESSION, f"test-{next(_numbers)}")
    item.stash[_KEY] = scope
    scope.enter()
    try:
        return (yield)
    finally:
        scope.exit()
        scope.kill()  # already reported by the teardown check; a leftover of a crash


_KEY = pytest.StashKey[Scope]()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    scope = item.stash.get(_KEY, None)
    if scope is None:
        return result
    problems = []
    if found := _problems(scope):
        problems.append(f"test {item.nodeid}: {found}")
    for fixturedef, wider in list(_open):
        if fixturedef.cached_result is None:  # finalized in this teardown
            _open.remove((fixturedef, wider))
            if found := _problems(wider):
                problems.append(f"fixture {fixturedef.argname} ({fixturedef.scope}): {found}")
    if problems:
        raise AssertionError("left behind (support/leakcheck.py):\n" + "\n".join(problems))
    return result
