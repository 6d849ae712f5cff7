"""What names a venv and what a shared venv directory's names say: the cache key of a
dependency set on this interpreter, and the ``<host>-<pid>`` tags of leftovers."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import socket
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import psutil

FINGERPRINT = "modelops-venv.json"  # in a venv: written last by its build (store.py)
FORMAT = 3  # bump when the venv layout or fingerprint changes: old venvs are rebuilt


def python_identity() -> dict[str, str]:
    """What a venv built on this interpreter is only valid for (read once per process:
    it is asked at every venv cache hit)."""
    return dict(_python_identity())


@functools.cache
def _python_identity() -> tuple[tuple[str, str], ...]:
    return tuple({
        "implementation": sys.implementation.name,
        "version": ".".join(map(str, sys.version_info[:3])),
        "abi": sysconfig.get_config_var("SOABI") or "",
        "platform": sysconfig.get_platform(),
        # two images with the same Python at different prefixes sharing a volume: their
        # venvs point at different interpreters, so they must not share a key
        "executable": os.path.realpath(sys.executable),
        "uv": _uv_version(),
    }.items())


@functools.cache
def _uv_version() -> str:
    try:
        return importlib.metadata.version("uv")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - uv is a dependency
        return "unknown"


def venv_key(requirements: Sequence[str]) -> str:
    """Cache key of a dependency set (already normalised and sorted by read_dependencies)."""
    blob = json.dumps({"format": FORMAT, "requirements": sorted(requirements),
                       "python": python_identity()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def owner_tag() -> str:
    """``<host>-<pid>`` of this process: names what it leaves in shared directories."""
    return f"{socket.gethostname()}-{os.getpid()}"


def left_by_dead_local_process(tagged: str) -> bool:
    """True if ``tagged`` (``<host>-<pid>-<random>``, the part after a name's prefix) was
    left by a process of this host that no longer runs. Names of other hosts, and names
    this cannot parse (e.g. an older layout without a host), are never claimed."""
    parts = tagged.rsplit("-", 2)
    if len(parts) != 3:
        return False
    host, pid, _ = parts
    return (host == socket.gethostname() and pid.isdigit()
            and not psutil.pid_exists(int(pid)))
