"""What a bundle declares: its third-party dependencies (``requirements.txt`` or
``pyproject.toml``) and extra types its replies may carry (``[tool.modelops]``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import BundleError

_COMMENT = re.compile(r"(?:^|\s)#")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


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
        # a comment starts a line or follows white space (as pip reads it): a '#' inside
        # a URL (`pkg @ https://…/x.whl#sha256=…`) is part of the requirement
        lines = [_COMMENT.split(ln, 1)[0].strip() for ln in req_file.read_text().splitlines()]
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




def read_reply_types(bundle_dir: Path) -> tuple[str, ...]:
    """Extra classes the bundle's replies may hold, as ``module.QualName`` strings, from
    ``pyproject.toml``: ``[tool.modelops] reply-types = ["pandas.DataFrame", ...]``
    (see worker/warm/decode.py for what the worker does with them)."""
    pyproject = Path(bundle_dir) / "pyproject.toml"
    if not pyproject.is_file():
        return ()
    try:
        data = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{pyproject} is not valid TOML: {exc}") from None
    names = data.get("tool", {}).get("modelops", {}).get("reply-types", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and _DOTTED.match(n)
                                              for n in names):
        raise BundleError(
            f"pyproject.toml: [tool.modelops] reply-types must be a list of dotted class "
            f"names such as 'pandas.DataFrame', got {names!r}; fix it and repack")
    return tuple(sorted(set(names)))
