"""The runner program a warm process starts: ``runner.py``, compiled once per venv."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import marshal
import os
import py_compile
import threading
import types
from pathlib import Path

from .venvs import FINGERPRINT, Venv

log = logging.getLogger("modelops_runtime.pool")

RUNNER = Path(__file__).with_name("runner.py")


@functools.cache
def _runner_digest() -> str:
    return hashlib.sha256(RUNNER.read_bytes()).hexdigest()[:16]


_good_programs: dict[Path, tuple[int, int, int]] = {}  # compiled runner → stat when checked
_uncompilable: dict[Path, tuple[int, int, int] | None] = {}  # → venv fingerprint's stat


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _loads_as_code(path: Path) -> bool:
    """A .pyc of this interpreter holding a code object (not truncated, not foreign)."""
    try:
        data = path.read_bytes()
        return (data[:4] == importlib.util.MAGIC_NUMBER
                and isinstance(marshal.loads(data[16:]), types.CodeType))
    except (OSError, ValueError, EOFError, TypeError):
        return False


def compile_runner(venv_dir: Path) -> None:
    """Compile the runner into a venv being built (before it is made read-only)."""
    program = venv_dir / f"modelops-runner-{_runner_digest()}.pyc"
    py_compile.compile(str(RUNNER), cfile=str(program), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _good_programs[program] = _identity(program)


def runner_program(venv: Venv) -> Path:
    """The runner compiled once into ``venv``: an interpreter started on a ``.py`` compiles
    it at every start (scripts are never cached), on a ``.pyc`` it runs it at once. The
    venv's interpreter is the worker's own (same bytecode magic). Named by the source's
    hash, so a changed runner is compiled anew; checked once per worker process before
    use and replaced if damaged. In a single-use venv (FORCE_FRESH_VENV), the program its
    pristine build compiled (clones.py), else the source; the source also for a read-only
    venv it cannot be compiled into."""
    program = venv.path / f"modelops-runner-{_runner_digest()}.pyc"
    if venv.fresh:
        return program if program.is_file() else RUNNER
    seen = _identity(program)
    if seen is not None and _good_programs.get(program) == seen:
        return program
    if seen is not None and _loads_as_code(program):
        _good_programs[program] = seen
        return program
    venv_id = _identity(venv.path / FINGERPRINT)  # a rebuilt venv is tried again
    if _uncompilable.get(program) == venv_id:
        return RUNNER  # failed before in this very venv (e.g. read-only): warned once
    tmp = program.with_name(f".{program.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        py_compile.compile(str(RUNNER), cfile=str(tmp), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        os.replace(tmp, program)  # atomic: other worker processes may race us
    except (OSError, py_compile.PyCompileError) as exc:
        log.warning("cannot compile the runner into %s (%s); starting it from source "
                    "(warned once per venv)", venv.path, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _uncompilable[program] = venv_id
        return RUNNER
    if seen is not None:
        log.warning("replaced a damaged compiled runner in %s", venv.path)
    _good_programs[program] = _identity(program)
    return program
