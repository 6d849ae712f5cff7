"""A bundle's Python files compiled once per pod, beside the bundle cache, never inside it.

- covers: compiling every ``.py`` file of an unpacked bundle into
  ``<bundle cache>/.bytecode/<digest>/<path>.pyc`` when it is unpacked (or first used, if
  an older runtime unpacked it): checked-hash pycs (the source's hash is in each file and
  is compared with the source at every import), compiled as an import compiles (no
  optimisation, the file's path in the bundle as its name). An unpacked bundle is
  read-only and has no ``__pycache__``, so without these every process compiled every
  module it imported from it.
- does not: load them (the runner's pycache.py does, falling back to compiling the source
  when a pyc is missing, foreign or does not match); change the bundle's tree (bundle
  code sees exactly the archive's files; the manifest check is unchanged).
- see also: docs/design.md "The runner program".
"""

from __future__ import annotations

import logging
import os
import py_compile
import uuid
from pathlib import Path

from .readonly import make_read_only, remove_tree

log = logging.getLogger("modelops_runtime.bundles")

DIRECTORY = ".bytecode"  # under the bundle cache: <digest>/<path in the bundle>.pyc


def bytecode_dir(bundle_dir: Path) -> Path:
    """Where the compiled files of the unpacked bundle ``bundle_dir`` live."""
    return bundle_dir.parent / DIRECTORY / bundle_dir.name


def compile_bundle(tree: Path, bundle_dir: Path) -> None:
    """Compile the ``.py`` files of ``tree`` (the bundle as it will be published at
    ``bundle_dir``) into :func:`bytecode_dir`, published at once (a rename) and read-only.
    A file that does not compile is left out (its import raises as before). Best effort:
    a failure costs speed, never a result."""
    final = bytecode_dir(bundle_dir)
    if final.is_dir():
        return
    work = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for source in sorted(tree.rglob("*.py")):
            if source.is_symlink() or not source.is_file():
                continue
            rel = source.relative_to(tree)
            try:
                py_compile.compile(
                    str(source), cfile=str(work / rel.parent / f"{rel.name}c"),
                    dfile=str(bundle_dir / rel), doraise=True, optimize=0,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            except py_compile.PyCompileError:
                continue  # a syntax error: the import reports it
        work.mkdir(parents=True, exist_ok=True)
        make_read_only(work, include_root=False)
        os.rename(work, final)
        os.chmod(final, 0o555)
    except OSError as exc:
        if final.is_dir():  # another worker process published them meanwhile
            return
        log.warning("bundle %s: its Python files were not precompiled (%s); each process "
                    "compiles what it imports", bundle_dir.name, exc)
    finally:
        remove_tree(work)


def remove_bytecode(bundle_dir: Path) -> None:
    """Remove the compiled files of ``bundle_dir`` (collected or unpacked again)."""
    remove_tree(bytecode_dir(bundle_dir))


__all__ = ["DIRECTORY", "bytecode_dir", "compile_bundle", "remove_bytecode"]
