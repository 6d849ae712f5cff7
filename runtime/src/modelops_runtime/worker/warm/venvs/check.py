"""Whether a cached venv may be reused (MODELOPS_VALIDATE_DEPS): its fingerprint, every
file against its build's record (record.py), its interpreter starting.

- covers: the full check once per worker process and venv, and again whenever the
  fingerprint or a site-packages directory changes (a package installed, upgraded or
  removed); a cache hit between costs a few stat calls, not one per installed file.
- does not: rebuild (store.py builds a new generation when this names a problem); notice
  a file changed while the worker process runs (the next worker process does).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ...limits import VENV_ERRNOS, limit_error
from ...packages import site_packages
from .keys import FINGERPRINT, FORMAT, python_identity, venv_python
from .record import record_problem


class VenvCheck:
    """Checks of one worker process. ``validate`` false: only that the fingerprint is a
    finished build's of the same dependency set."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = validate
        self._checked: dict[Path, tuple] = {}  # venv → its identity when it passed
        self._sites: dict[Path, list[str]] = {}  # venv → its site-packages directories

    def problem(self, dest: Path, key: str, requirements: Sequence[str]) -> str | None:
        """Why ``dest`` cannot be reused, or None if it can."""
        fp_path = dest / FINGERPRINT
        try:
            stat = fp_path.stat()
            if self.validate and self._checked.get(dest) == self._identity(dest, stat):
                return None  # as it was when it passed (a cache hit: a few stat calls)
            fingerprint = json.loads(fp_path.read_text())
        except FileNotFoundError:
            return "it has no fingerprint (a build that did not finish)"
        except (OSError, ValueError) as exc:
            return f"its fingerprint is unreadable ({exc})"
        if not isinstance(fingerprint, dict) or fingerprint.get("key") != key:
            return "its fingerprint belongs to another dependency set"
        if not self.validate:
            return None
        expected = {"requirements": sorted(requirements), "python": python_identity(),
                    "format": FORMAT}
        for field, value in expected.items():
            if fingerprint.get(field) != value:
                return (f"its fingerprint's {field} is {fingerprint.get(field)!r}, "
                        f"expected {value!r}")
        # The full check (every file against the build's record, record.py; the interpreter
        # starting) runs the first time this worker process uses the venv, and again
        # whenever the fingerprint or a site-packages directory changes (a package
        # installed, upgraded or removed): a cache hit then costs a few stat calls, not one
        # per installed file.
        identity = self._identity(dest, stat)
        if self._checked.get(dest) == identity:
            return None
        if not isinstance(fingerprint.get("files"), str):
            return "its fingerprint names no file record"
        if problem := record_problem(dest, FINGERPRINT, fingerprint["files"]):
            return problem
        if problem := self._interpreter_problem(dest):
            return problem
        self._checked[dest] = identity
        return None

    def _identity(self, dest: Path, stat: os.stat_result) -> tuple:
        """What changes when the fingerprint is rewritten or a package installed, upgraded
        or removed: the fingerprint's stat and each site-packages directory's mtime (the
        directories of a venv, found once: an install never adds one)."""
        sites = self._sites.get(dest)
        if sites is None:
            sites = self._sites[dest] = [os.fspath(site) for site in site_packages(dest)]
        try:
            mtimes = tuple(os.stat(site).st_mtime_ns for site in sites)
        except OSError:  # one was removed: never the identity that passed
            self._sites.pop(dest, None)
            mtimes = None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size, mtimes)

    @staticmethod
    def _interpreter_problem(venv: Path) -> str | None:
        python = venv_python(venv)
        try:
            proc = subprocess.run([str(python), "-I", "-c", "pass"],
                                  capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return f"its interpreter does not start ({exc})"
        except OSError as exc:
            if exc.errno in VENV_ERRNOS and exc.filename == str(python):
                return f"its interpreter does not start ({exc})"
            # e.g. EMFILE: the worker is at a limit; rebuilding a good venv would not help
            raise limit_error(exc, f"checking the venv {venv}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-500:]
            return f"its interpreter exits with {proc.returncode} ({err})"
        return None


__all__ = ["VenvCheck"]
