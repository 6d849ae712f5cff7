"""Which packages an environment holds: the set a task ran with, and a digest of what a
venv has installed (for MODELOPS_VALIDATE_DEPS).

A package set is the sorted ``name==version`` list of the distributions importable from
some paths (a venv's site-packages for isolated_warm, the worker's ``sys.path`` for
direct); every SimResult names its set by a short digest, and the full lists travel once
per digest (``package_sets`` of an executor, collected by the client after a study).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

DIGEST_CHARS = 16


def package_list(paths: Iterable[str | os.PathLike] | None = None) -> list[str]:
    """``name==version`` of every distribution found on ``paths`` (default: ``sys.path``),
    sorted; the first one found wins for a name, as for imports."""
    seen: dict[str, str] = {}
    search = [str(p) for p in (sys.path if paths is None else paths)]
    for dist in metadata.distributions(path=search):
        name = dist.metadata.get("Name") if dist.metadata else None
        if not name:
            continue
        seen.setdefault(canonicalize_name(name), dist.version)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def package_digest(packages: Sequence[str]) -> str:
    """Short digest naming a package set (the same set → the same digest)."""
    blob = "\n".join(sorted(packages)).encode()
    return hashlib.sha256(blob).hexdigest()[:DIGEST_CHARS]


def site_packages(venv: Path) -> list[Path]:
    """The site-packages directories of a venv (``lib/pythonX.Y/site-packages``)."""
    return sorted(Path(venv).glob("lib/python*/site-packages"))


def venv_packages(venv: Path) -> list[str]:
    return package_list(site_packages(venv))


def installed_digest(venv: Path) -> str:
    """A digest of what is installed in ``venv``: every distribution's METADATA and RECORD,
    and the size of every file its RECORD lists (-1 if missing). Changes when a package is
    installed, upgraded or removed after the build (``pip install`` into the venv) and when
    an installed file is deleted or truncated."""
    h = hashlib.sha256()
    for site in site_packages(venv):
        for info in sorted(site.glob("*.dist-info")):
            h.update(info.name.encode() + b"\0")
            for name in ("METADATA", "RECORD"):
                try:
                    h.update((info / name).read_bytes())
                except OSError:
                    h.update(b"<missing " + name.encode() + b">")
                h.update(b"\0")
            try:
                lines = (info / "RECORD").read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                rel = line.split(",", 1)[0]
                if not rel or rel.endswith(".pyc"):
                    continue   # byte-code caches come and go with imports
                try:
                    size = os.stat(site / rel).st_size
                except OSError:
                    size = -1
                h.update(f"{rel}:{size}\n".encode())
    return h.hexdigest()[:32]
