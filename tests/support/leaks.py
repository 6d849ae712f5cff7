"""Leftovers of a test, found without asking the code under test: marked processes and a
per-scope directory.

- covers: a :class:`Scope` gives every process started inside it two marks it cannot
  shed easily -- ``TESTS_LEAK_MARK=<session>/<scope>`` in its environment (inherited by
  every descendant that is not given a new environment) and, where the cgroup v2
  hierarchy is writable (root on Linux), a cgroup of its own that no descendant can leave
  without root, whatever its session, parent or environment (warm processes get an
  allow-listed environment: the cgroup still holds them). Its ``TMPDIR`` is a directory
  of its own. :meth:`Scope.leftovers` scans the whole process table (``/proc/*/environ``)
  and the cgroup; :meth:`Scope.leftover_files` lists what is left in its directory.
- does not: decide when a scope starts or ends (support/leakcheck.py, the pytest plugin,
  does: one scope per test and per wider fixture); see a process that was given a
  fresh environment *and* left the cgroup (only root can do the latter).
- see also: tests/repo/test_leak_check.py (a planted leak caught by this and missed by
  the old 50 ms sampling of e2e_support's ProcessRecord).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MARK_VAR = "TESTS_LEAK_MARK"
# What Dask leaves in a TMPDIR it used (distributed.diskutils.WorkSpace): its lock files,
# always, and the directory of a scheduler or worker that was killed, which the next Dask
# process using that TMPDIR purges. Dask's, not the runtime's: not counted.
TOLERATED = "dask-scratch-space"


def _cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (None: not Linux, or no v2 hierarchy)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None


def _own_cgroup() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    return None


def _move_self(cgroup: Path) -> None:
    """Move this whole process (every thread) into ``cgroup``."""
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))


def _status(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"{pid} {cmd[:160]}"


def marked(entry: bytes, *, prefix: bool = False) -> list[int]:
    """Live processes (not zombies, not this one) whose environment holds ``entry``
    (``b"NAME=value"``; with ``prefix``, an entry starting with it), found by reading
    every ``/proc/<pid>/environ`` we may read."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        hit = any(e.startswith(entry) for e in env) if prefix else entry in env
        if hit and _status(int(name)) not in (None, "Z"):
            found.append(int(name))
    return found


class Session:
    """The marks of one pytest session: a random id, a cgroup (if it can have one) and a
    directory; each :class:`Scope` lives below them."""

    def __init__(self, base: Path) -> None:
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = base / f"modelops-tests-{self.id}"
        sweep_stale(base)  # the TMPDIRs of sessions that were killed
        self.root.mkdir(parents=True)
        self.home: Path | None = None      # the cgroup pytest came from
        self.cgroup: Path | None = None    # ours, holding one cgroup per scope
        self.no_cgroup = "not Linux"
        mount, own = _cgroup2_mount(), _own_cgroup()
        if mount is None or own is None:
            self.no_cgroup = "no cgroup v2 hierarchy"
            return
        self.home = mount / own.lstrip("/")
        try:
            (self.home / f"modelops-tests-{self.id}").mkdir()
        except OSError as exc:
            self.no_cgroup = f"cannot create a cgroup ({exc.strerror})"
            return
        self.cgroup = self.home / f"modelops-tests-{self.id}"
        self.no_cgroup = ""
        sweep_stale(self.home)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.cgroup is not None:
            remove_cgroup(self.cgroup)


def remove_cgroup(cgroup: Path) -> None:
    """Remove ``cgroup`` and the cgroups below it, deepest first (each must be empty of
    processes; one that is not stays)."""
    for path, _dirs, _files in sorted(os.walk(cgroup), key=lambda w: -w[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def sweep_stale(where: Path) -> None:
    """Remove what sessions whose pytest is gone (killed) left in ``where``: their
    directories, their cgroups once empty."""
    for stale in where.glob("modelops-tests-*"):
        pid = stale.name.removeprefix("modelops-tests-").split("-")[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        if not (stale / "cgroup.procs").exists():
            shutil.rmtree(stale, ignore_errors=True)
            continue
        remove_cgroup(stale)


@dataclass
class Scope:
    """One test's (or one wider fixture's) marks. ``enter()``/``exit()`` bracket the time
    in which what this process starts belongs to the scope; they nest."""

    session: Session
    name: str
    mark: str = ""
    tmp: Path = field(init=False)
    cgroup: Path | None = field(init=False, default=None)
    _saved: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.mark = f"{self.session.id}/{self.name}"
        self.tmp = self.session.root / self.name
        self.tmp.mkdir(parents=True)
        if self.session.cgroup is not None:
            self.cgroup = self.session.cgroup / self.name
            self.cgroup.mkdir()

    @property
    def entry(self) -> bytes:
        return f"{MARK_VAR}={self.mark}".encode()

    def enter(self) -> None:
        self._saved.append((os.environ.get(MARK_VAR), os.environ.get("TMPDIR"),
                            _own_cgroup()))
        os.environ[MARK_VAR] = self.mark
        os.environ["TMPDIR"] = str(self.tmp)  # for children; tempfile here keeps its own
        if self.cgroup is not None:
            _move_self(self.cgroup)

    def exit(self) -> None:
        mark, tmp, cgroup = self._saved.pop()
        for name, value in ((MARK_VAR, mark), ("TMPDIR", tmp)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.cgroup is not None and cgroup is not None:
            mount = _cgroup2_mount()
            assert mount is not None
            _move_self(mount / cgroup.lstrip("/"))

    @contextlib.contextmanager
    def inside(self):
        self.enter()
        try:
            yield self
        finally:
            self.exit()

    # -- what is left ----------------------------------------------------------------------
    def in_cgroup(self) -> list[int]:
        if self.cgroup is None:
            return []
        try:
            pids = [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return []
        return [p for p in pids if p != os.getpid() and _status(p) not in (None, "Z")]

    def leftovers(self) -> list[int]:
        """Live processes carrying this scope's mark or in its cgroup."""
        return sorted(set(marked(self.entry)) | set(self.in_cgroup()))

    def leftover_files(self) -> list[str]:
        """What is left in this scope's directory (relative paths; Dask's workspace,
        :data:`TOLERATED`, excepted)."""
        if not self.tmp.exists():
            return []
        left = [p.relative_to(self.tmp) for p in sorted(self.tmp.rglob("*"))]
        return [str(p) for p in left if p.parts[0] != TOLERATED]

    def wait_clean(self, timeout: float = 10.0) -> list[int]:
        """Leftover processes after a bounded wait (exits and reaping are asynchronous)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def describe(self, pids: list[int]) -> str:
        return "; ".join(_describe(p) for p in pids)

    def kill(self) -> None:
        """SIGKILL everything left in the scope but this process (bounded wait), then
        remove its cgroup and directory."""
        for _ in range(50):
            left = self.leftovers()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
