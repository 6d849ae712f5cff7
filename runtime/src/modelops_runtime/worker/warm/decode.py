"""Decoding a warm process's reply in the worker without running bundle-chosen code.

A reply is marshal (plain data: nothing to call) or pickle. Unpickling calls whatever
global the stream names (``os.system`` from a result's ``__reduce__``, say), so pickled
replies go through :class:`ReplyUnpickler`, which resolves only allow-listed globals:

- a few builtins (set, frozenset, complex, bytearray, slice, range);
- datetime, decimal, fractions, uuid, array and collections value types;
- numpy arrays, dtypes and scalars (numpy 1 and 2 names), if the worker has numpy;
- the runtime's own contracts (``modelops_runtime.models``, ``modelops_runtime.errors``);
- the classes the bundle declares in its ``pyproject.toml``::

      [tool.modelops]
      reply-types = ["pandas.DataFrame", "mylib.records.Point"]

  A declared name must be a class (never a function) importable in the *worker's*
  environment, outside the modules that reach the system (os, subprocess, io, pickle,
  importlib, ctypes, socket, ... see :data:`DENIED_MODULES`). Declaring a class trusts it:
  the worker imports its module and builds instances from the reply.

Anything else raises :class:`RefusedType` naming it; the pool reports it as a
``SimulationError`` and the warm process stays usable (the frame was read whole).
"""

from __future__ import annotations

import io
import pickle

from .runner.frames import MARSHAL, PICKLE
from .runner.frames import decode as _plain_decode

_NUMPY = {(prefix + suffix, name)
          for prefix in ("numpy.core", "numpy._core")
          for suffix, name in ((".multiarray", "_reconstruct"), (".multiarray", "scalar"),
                               (".numeric", "_frombuffer"))}
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    *(("builtins", n) for n in ("set", "frozenset", "complex", "bytearray", "slice", "range")),
    *(("datetime", n) for n in ("date", "time", "datetime", "timedelta", "timezone")),
    ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
    ("array", "array"), ("array", "_array_reconstructor"),
    *(("collections", n) for n in ("OrderedDict", "deque", "Counter", "defaultdict")),
    ("numpy", "ndarray"), ("numpy", "dtype"), *_NUMPY,
    ("modelops_runtime.errors", "_restore"),
})
OWN_MODULES = ("modelops_runtime.models", "modelops_runtime.errors")  # their classes
DENIED_MODULES = frozenset({
    "builtins", "os", "posix", "nt", "sys", "subprocess", "shutil", "io", "_io", "codecs",
    "pickle", "_pickle", "copyreg", "marshal", "importlib", "runpy", "pkgutil", "zipimport",
    "ctypes", "socket", "ssl", "select", "selectors", "signal", "multiprocessing",
    "threading", "_thread", "concurrent", "asyncio", "tempfile", "pathlib", "glob",
    "fileinput", "zipfile", "tarfile", "gzip", "bz2", "lzma", "shelve", "dbm", "sqlite3",
    "logging", "code", "codeop", "pdb", "bdb", "webbrowser", "http", "urllib", "ftplib",
    "smtplib", "operator", "functools", "types", "inspect", "ast", "site", "sysconfig",
    "platform", "resource", "fcntl", "mmap", "pty", "tty", "termios", "pwd", "grp",
    "posixpath", "ntpath", "distributed", "dask", "modelops_runtime", "fsspec", "psutil",
    "uv", "cloudpickle", "dill",
})
DECLARE_HINT = ("declare the class in the bundle's pyproject.toml under [tool.modelops] "
                "reply-types if it is a plain data class installed in the worker image, or "
                "return plain data (dicts, lists, numbers, strings, bytes, numpy arrays)")


class RefusedType(pickle.UnpicklingError):
    """A reply names a global the worker does not unpickle."""


class ReplyUnpickler(pickle.Unpickler):
    def __init__(self, file, declared: frozenset[str] = frozenset()) -> None:
        super().__init__(file)
        self.declared = declared

    def find_class(self, module: str, name: str):
        dotted = f"{module}.{name}"
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        top = module.partition(".")[0]
        if module in OWN_MODULES or (dotted in self.declared and top not in DENIED_MODULES
                                     and module not in DENIED_MODULES):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
            raise RefusedType(f"the reply holds {dotted}, which is not a class; the worker "
                              f"unpickles declared classes only: {DECLARE_HINT}")
        if dotted in self.declared:
            raise RefusedType(f"the reply holds {dotted}, declared as a reply type, but "
                              f"module {module!r} is never unpickled by the worker (it "
                              "reaches the system); return plain data instead")
        raise RefusedType(f"the reply holds {dotted}, a type the worker does not unpickle: "
                          f"{DECLARE_HINT}")


def decode_reply(codec: bytes, body, declared: frozenset[str] = frozenset()):
    """One reply frame's body → its object, never calling a global off the allow-list."""
    if codec == PICKLE:
        return ReplyUnpickler(io.BytesIO(body), declared).load()
    if codec == MARSHAL:
        return _plain_decode(codec, body)
    raise ValueError(f"unknown frame codec {bytes(codec)!r}")
