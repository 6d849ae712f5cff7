"""Bundles: pack a model directory into a content-addressed archive, fetch, verify, unpack.

(Skeleton: ``read_dependencies`` is final; ``BundleStore`` and packing are filled in by
the runtime-core work.)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import BundleError


def read_dependencies(bundle_dir: Path) -> list[str]:
    """The bundle's declared third-party dependencies, normalised and sorted.

    Read from ``requirements.txt`` (one requirement a line, ``#`` comments) or, if absent,
    ``pyproject.toml``'s ``[project].dependencies``. Names are canonicalised
    (``Scikit_Learn`` → ``scikit-learn``) so equal dependency sets compare equal.
    """
    bundle_dir = Path(bundle_dir)
    req_file = bundle_dir / "requirements.txt"
    pyproject = bundle_dir / "pyproject.toml"
    if req_file.is_file():
        lines = [ln.split("#", 1)[0].strip() for ln in req_file.read_text().splitlines()]
        source, raw = req_file.name, [ln for ln in lines if ln]
    elif pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BundleError(f"{pyproject} is not valid TOML: {exc}") from None
        source, raw = pyproject.name, list(data.get("project", {}).get("dependencies", []))
    else:
        return []
    out = []
    for line in raw:
        if line.startswith("-"):
            raise BundleError(
                f"{source}: option line {line!r} is not supported in a bundle; list plain "
                "requirements only and configure indexes with uv's UV_* variables")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise BundleError(f"{source}: invalid requirement {line!r}: {exc}") from None
        req.name = canonicalize_name(req.name)
        out.append(str(req))
    return sorted(set(out))
