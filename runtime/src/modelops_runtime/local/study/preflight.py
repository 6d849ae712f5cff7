"""Errors that would hit every run of a study, found before a cluster starts: the
entrypoints (``entrypoint``, ``aggregate``, ``aggregate_sets``) read from the bundle's files.

- covers: a module of the bundle's own packages that is not there, a syntax error in it,
  a function it does not define (with the closest names it does)
- does not: import anything (bundle code runs only on workers, in its own venv); judge a
  module the bundle does not ship (it may come from a requirement) or a module whose names
  are made at run time (``from x import *``, a module ``__getattr__``, ``exec``,
  ``globals()``): the workers do
- see also: report.py (what fails at run time anyway is printed once, with its count)
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

from ...errors import EntrypointError
from .studyfile import Study


def _module_file(bundle: Path, module: str) -> Path | None:
    """The file ``module`` is loaded from when the bundle root is on sys.path, or None if
    its top-level package is not in the bundle (then a requirement may provide it)."""
    parts = module.split(".")
    if not ((bundle / parts[0]).is_dir() or (bundle / f"{parts[0]}.py").is_file()):
        return None
    base = bundle.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    if base.is_dir():               # a namespace package: importable, defines nothing
        return base
    parent = base.parent
    have = sorted(p.stem for p in parent.glob("*.py") if p.stem != "__init__") \
        if parent.is_dir() else []
    near = difflib.get_close_matches(parts[-1], have, n=1)
    hint = f"; did you mean '{'.'.join([*parts[:-1], near[0]])}'?" if near else ""
    raise EntrypointError(
        f"module '{module}' is not in the bundle {bundle}: neither {base.name}.py nor "
        f"{base.name}/__init__.py in {parent}{hint} (nothing was started)")


def _defined_names(tree: ast.Module) -> set[str] | None:
    """Names a module defines at its top level (inside if/try/with too); None when they
    cannot be known without running it."""
    names: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                todo += handler.body
    called = {n.func.id for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    if "__getattr__" in names or called & {"globals", "exec", "setattr"}:
        return None
    return names


def check_entrypoint_in_bundle(bundle: Path, entrypoint: str, role: str) -> None:
    """Raise EntrypointError if ``module:function`` cannot be loaded from ``bundle``."""
    module, function = entrypoint.split(":", 1)
    path = _module_file(bundle, module)
    if path is None or path.is_dir():
        return
    source = path.read_bytes()
    try:   # compile, not only parse: misplaced __future__ imports and the like too
        compile(source, str(path), "exec", dont_inherit=True)
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise EntrypointError(
            f"{role} '{entrypoint}': {path} cannot be imported: SyntaxError: {exc.msg} "
            f"(line {exc.lineno}); nothing was started") from None
    names = _defined_names(tree)
    if names is None or function in names:
        return
    near = difflib.get_close_matches(function, sorted(n for n in names if not n.startswith("_")),
                                     n=1)
    hint = f"; did you mean '{module}:{near[0]}'?" if near else ""
    raise EntrypointError(
        f"{role} '{entrypoint}': module '{module}' ({path}) defines no '{function}'{hint} "
        "(nothing was started)")


def check_study_entrypoints(study: Study) -> None:
    """Every entrypoint the study names, checked against the bundle's files."""
    for role, ep in (("entrypoint", study.entrypoint), ("aggregate", study.aggregate),
                     ("aggregate_sets", study.aggregate_sets)):
        if ep:
            check_entrypoint_in_bundle(Path(study.bundle), ep, role)
