"""The runner program a warm process starts: runner.py and its sibling files (frames.py,
confine.py, template.py, prewarm.py, clone.py, pycache.py), compiled once per venv into
one directory."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib.util
import logging
import marshal
import os
import py_compile
import shutil
import threading
import types
from pathlib import Path

from ..venvs.record import PROGRAM_PREFIX
from ..venvs.store import FINGERPRINT, Venv

log = logging.getLogger("modelops_runtime.pool")

SOURCE = Path(__file__).parent  # the program's source files: the runner loads its siblings
FILES = ("main", "frames", "confine", "template", "prewarm", "pycache", "clone")  # its directory
RUNNER = SOURCE / "main.py"


@functools.cache
def _digest() -> str:
    h = hashlib.sha256()
    for name in FILES:
        data = (SOURCE / f"{name}.py").read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()[:16]


def program_dir(venv_dir: Path) -> Path:
    """Where the program is compiled in a venv: named by the digest of all its sources,
    so a changed file makes a new directory (and an old runtime's stays valid)."""
    return venv_dir / f"{PROGRAM_PREFIX}{_digest()}"


_good_programs: dict[Path, tuple] = {}  # compiled program dir → its files' stats when checked
_uncompilable: dict[Path, tuple[int, int, int] | None] = {}  # → venv fingerprint's stat


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _identities(directory: Path) -> tuple | None:
    """The stats of every compiled file, None if one is missing."""
    ids = tuple(_identity(directory / f"{name}.pyc") for name in FILES)
    return None if None in ids else ids


def _loads_as_code(path: Path) -> bool:
    """A .pyc of this interpreter holding a code object (not truncated, not foreign)."""
    try:
        data = path.read_bytes()
        return (data[:4] == importlib.util.MAGIC_NUMBER
                and isinstance(marshal.loads(data[16:]), types.CodeType))
    except (OSError, ValueError, EOFError, TypeError):
        return False


def _compile_into(directory: Path) -> None:
    """Each file as ``directory/<name>.pyc`` (py_compile writes each atomically)."""
    for name in FILES:
        py_compile.compile(str(SOURCE / f"{name}.py"), cfile=str(directory / f"{name}.pyc"),
                           doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def compile_runner(venv_dir: Path) -> None:
    """Compile the program into a venv being built (before it is made read-only)."""
    directory = program_dir(venv_dir)
    _compile_into(directory)
    _good_programs[directory] = _identities(directory)


def _publish(tmp: Path, directory: Path) -> None:
    """Move the freshly compiled ``tmp`` into place: the whole directory at once if there
    is none yet, else file by file (each atomically: a runner starting meanwhile reads
    whole files, of the same sources), replacing a damaged or missing one."""
    try:
        os.rename(tmp, directory)
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    for name in FILES:
        os.replace(tmp / f"{name}.pyc", directory / f"{name}.pyc")
    tmp.rmdir()


def runner_program(venv: Venv) -> Path:
    """The runner compiled once into ``venv``: an interpreter started on a ``.py`` compiles
    it at every start (scripts are never cached), on a ``.pyc`` it runs it at once, and the
    runner loads its compiled siblings from the same directory. The venv's interpreter is
    the worker's own (same bytecode magic). Named by the sources' digest, so a changed
    program is compiled anew; checked once per worker process before use and replaced if
    damaged. In a single-use venv (FORCE_FRESH_VENV), the program its pristine build
    compiled (clones.py), else the source; the source also for a read-only venv it cannot
    be compiled into (the runner then compiles its siblings from the source directory)."""
    directory = program_dir(venv.path)
    program = directory / "main.pyc"
    if venv.fresh:
        return program if _identities(directory) is not None else RUNNER
    seen = _identities(directory)
    if seen is not None and _good_programs.get(directory) == seen:
        return program
    if seen is not None and all(_loads_as_code(directory / f"{name}.pyc") for name in FILES):
        _good_programs[directory] = seen
        return program
    venv_id = _identity(venv.path / FINGERPRINT)  # a rebuilt venv is tried again
    if _uncompilable.get(directory) == venv_id:
        return RUNNER  # failed before in this very venv (e.g. read-only): warned once
    damaged = directory.exists()
    tmp = venv.path / f".{directory.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        _compile_into(tmp)
        _publish(tmp, directory)  # atomic: other worker processes may race us
    except (OSError, py_compile.PyCompileError) as exc:
        log.warning("cannot compile the runner into %s (%s); starting it from source "
                    "(warned once per venv)", venv.path, exc)
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        _uncompilable[directory] = venv_id
        return RUNNER
    if damaged:
        log.warning("replaced a damaged compiled runner in %s", venv.path)
    _good_programs[directory] = _identities(directory)
    return program
