"""Test bundles: write a bundle directory from a dict of files and pack it into a repo."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import textwrap
from collections.abc import Mapping
from pathlib import Path

from modelops_runtime.bundles import FORMAT_KEY, FORMAT_VERSION, pack

# a small model: deterministic outputs from params and seed, plus where it ran
SIM_MODEL = '''
import os

def simulate(params, seed):
    x = float(params.get("x", 1.0))
    return {"value": x * seed, "seed": seed, "pid": os.getpid()}

def total(outputs):
    return {"total": sum(o["value"] for o in outputs), "n": len(outputs)}
'''

# module-level state: a fresh import per task must always give 1
COUNTER_MODEL = '''
COUNT = 0

def bump(params, seed):
    global COUNT
    COUNT += 1
    return {"count": COUNT}
'''


def write_bundle(root: Path, files: Mapping[str, str]) -> Path:
    """Create ``root`` with ``files`` (relative path → text, dedented)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def make_bundle(tmp: Path, repo: Path, files: Mapping[str, str], name: str = "bundle") -> str:
    """Write a bundle from ``files`` under ``tmp/name``, pack it into ``repo``; return its ref."""
    return pack(write_bundle(tmp / name, files), str(repo))


def store_raw_archive(repo: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                      fmt: str | None = FORMAT_VERSION) -> str:
    """Store a hand-made (possibly malicious) archive under its correct digest; return ref.
    ``fmt``: the archive format it claims (None: none, as archives before format 2)."""
    buf = io.BytesIO()
    headers = {FORMAT_KEY: fmt} if fmt is not None else {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=headers) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    repo.mkdir(parents=True, exist_ok=True)
    (repo / f"{digest}.tar.gz").write_bytes(gzip.compress(raw, mtime=0))
    return f"sha256:{digest}"


def archive_path(repo: Path, ref: str) -> Path:
    return repo / f"{ref.split(':', 1)[1]}.tar.gz"


# Entrypoints whose imports name modules that belong in the bundle but are missing from
# it: each must be reported as a bundle problem, never as a missing third-party dependency.
MISSING_INSIDE = {
    "sir/__init__.py": "",
    "sir/model.py": "import sir.helpers\n\ndef run(params, seed):\n    return {}\n",
    "sir/lazy.py": "def run(params, seed):\n    from sir.extra import rate\n    return {}\n",
    "util/__init__.py": "",
    "flat.py": "from util.io import load\n\ndef run(params, seed):\n    return {}\n",
    "own.py": "import my_helpers\n\ndef run(params, seed):\n    return {}\n",
}
