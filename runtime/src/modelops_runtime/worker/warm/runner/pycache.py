"""The bundle's modules from the bytecode the worker compiled at unpack (runner program,
stdlib only; main.py loads it).

- covers: a path hook for the bundle's directories whose finder is the standard one
  (``FileFinder`` with the standard loaders) except that a ``.py`` file's code is read
  from ``<bytecode dir>/<path in the bundle>c`` when that file is a checked-hash pyc of
  this interpreter whose source hash is the source's now: the code an import of the source
  would compile (bundles/bytecode.py compiles it so), without compiling it in every
  process. Anything else (no pyc, another interpreter's, a source that changed) is
  compiled from the source as before.
- does not: write anything, or touch modules outside the bundle (the venv's have their
  own ``__pycache__``).
- installed in every warm process, template and exec'd process alike, before any bundle
  code runs, so what bundle code observes is the same in every mode.
"""

import _imp
import marshal
import os
import sys
from _frozen_importlib_external import (BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, MAGIC_NUMBER,
                                        SOURCE_SUFFIXES, ExtensionFileLoader, FileFinder,
                                        SourceFileLoader, SourcelessFileLoader)

_CHECKED_HASH = 0b11  # pyc flags: hash-based, checked
_RAW_MAGIC = int.from_bytes(MAGIC_NUMBER, "little")


def install(bundle_dir: str, bytecode_dir: str) -> None:
    """Serve the modules under ``bundle_dir`` from ``bytecode_dir`` where it can."""
    prefix = os.path.join(bundle_dir, "")

    class BundleSourceLoader(SourceFileLoader):
        """A ``SourceFileLoader`` whose code comes from the worker's pyc when it matches."""

        def get_code(self, fullname):
            path = self.get_filename(fullname)
            if path.startswith(prefix):
                code = _precompiled(self, path, os.path.join(bytecode_dir,
                                                             path[len(prefix):] + "c"))
                if code is not None:
                    return code
            return super().get_code(fullname)

    loaders = ((ExtensionFileLoader, EXTENSION_SUFFIXES),
               (BundleSourceLoader, SOURCE_SUFFIXES),
               (SourcelessFileLoader, BYTECODE_SUFFIXES))

    def bundle_path_hook(path):
        if path == bundle_dir or path.startswith(prefix):
            return FileFinder(path, *loaders)
        raise ImportError("not a directory of the bundle")

    sys.path_hooks.insert(0, bundle_path_hook)
    sys.path_importer_cache.pop(bundle_dir, None)


def _precompiled(loader, source_path: str, pyc: str):
    """The code object in ``pyc`` if it is a checked-hash pyc of this interpreter for the
    source as it is now, else None."""
    try:
        with open(pyc, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if (len(data) < 16 or data[:4] != MAGIC_NUMBER
            or int.from_bytes(data[4:8], "little") != _CHECKED_HASH):
        return None
    try:
        source = loader.get_data(source_path)
    except OSError:
        return None
    if data[8:16] != _imp.source_hash(_RAW_MAGIC, source):
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except (EOFError, ValueError, TypeError):
        return None
    if type(code) is not type(_precompiled.__code__):
        return None
    _imp._fix_co_filename(code, source_path)
    return code
