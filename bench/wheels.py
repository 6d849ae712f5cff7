"""A local wheelhouse of real packages, without any network: the distributions already
installed in this environment (pydantic and its compiled core, PyYAML, ...) are packed
back into wheels from their RECORD files.

That gives the venv benchmark real dependencies — native extensions, hundreds of files,
a dependency tree to resolve — that uv and pip both install offline from
``--find-links``.
"""

from __future__ import annotations

import zipfile
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared import record_hash

# dist-info files that describe an installation, not the package
_INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def closure(names: list[str]) -> dict[str, Distribution]:
    """The installed distributions ``names`` need (their unconditional requirements)."""
    found: dict[str, Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        dist = distribution(name)
        found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _wheel_tag(dist: Distribution) -> str:
    """The compressed tag set of the wheel this distribution was installed from."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")] or ["py3-none-any"]
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def repack(dist: Distribution, out_dir: Path) -> Path:
    """Write ``dist`` (an installed distribution) back into a wheel in ``out_dir``."""
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    info = next(str(f).split("/")[0] for f in dist.files if str(f).split("/")[0].endswith(".dist-info"))
    records: list[str] = []
    wheel = out_dir / f"{name}-{dist.version}-{_wheel_tag(dist)}.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files:
            rel = str(f)
            # scripts live outside site-packages ("../../bin"): installers regenerate them
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            if rel.startswith(info + "/") and rel.split("/", 1)[1] in _INSTALL_ONLY:
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(rel, data)
            records.append(f"{rel},{record_hash(data)},{len(data)}")
        records.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


def wheelhouse(names: list[str], out_dir: Path) -> tuple[Path, list[str]]:
    """Repack ``names`` and everything they require into ``out_dir``.

    Returns (the find-links directory, pinned requirements of ``names``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for dist in closure(names).values():
        repack(dist, out_dir)
    pins = [f"{canonicalize_name(n)}=={distribution(n).version}" for n in names]
    return out_dir, pins
