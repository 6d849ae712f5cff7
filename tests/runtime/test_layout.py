"""The package's shape (DESIGN.md "Layout"): sides as packages and their parts as
sub-packages, arrows pointing one way (cli → local → client → worker → bundles → contracts),
no import circles between modules or between a side's parts, no private name imported
across modules, one definition of each exit code, no module past ~500 lines. Read from the source with ``ast``: every import counts, also the ones inside
functions and under ``TYPE_CHECKING``, because each of them is an arrow a reader follows."""

from __future__ import annotations

import ast
from pathlib import Path

import modelops_runtime

PKG = Path(modelops_runtime.__file__).resolve().parent
ROOT = "modelops_runtime"
MAX_LINES = 500  # a smell, not a wall: split by concern, never squeeze
# module → why it may be longer, until when. Empty is the goal; an entry names its issue.
LONG_MODULES: dict[str, str] = {}

# lowest first: a module may import from its own side and the sides below it
SIDES = ["contracts", "bundles", "worker", "client", "local", "cli"]


def side_of(module: str) -> str:
    parts = module.split(".")[1:]  # without "modelops_runtime"
    if not parts or parts[0] in ("config", "errors", "exitcodes", "models", "locks"):
        return "contracts"
    if parts[0] == "preload":  # `--preload modelops_runtime.preload`: delegates to worker/
        return "worker"
    if parts[0] in SIDES:
        return parts[0]
    raise AssertionError(f"{module} belongs to no side: put it into one of {SIDES} "
                         "(see DESIGN.md, Layout)")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [ROOT, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        elif parts[-1] == "__main__":
            continue  # runs a package; nothing imports it
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports (the most specific existing module)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str, names: list[str]) -> None:
        hits = {f"{target}.{n}" for n in names if f"{target}.{n}" in known}
        if hits:
            found.update(hits)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target.startswith(ROOT) and not hits:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    add(alias.name, [])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == ROOT:
                add(target, [a.name for a in node.names])
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_belongs_to_a_side():
    for name in modules():
        side_of(name)


def test_imports_point_down_the_sides():
    """cli → local → client → worker → bundles → contracts: never up."""
    wrong = []
    for name, targets in graph().items():
        rank = SIDES.index(side_of(name))
        for target in sorted(targets):
            if SIDES.index(side_of(target)) > rank:
                wrong.append(f"{name} ({side_of(name)}) imports {target} ({side_of(target)})")
    assert not wrong, ("imports pointing up the sides (allowed: " + " → ".join(reversed(SIDES))
                       + "):\n" + "\n".join(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_the_walker_sees_circles_and_lazy_imports(tmp_path):
    """The checks above are only as good as the walker: it must see an import inside a
    function and under TYPE_CHECKING, resolve relative imports, and report a circle."""
    pkg = tmp_path / ROOT
    (pkg / "worker").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "worker" / "__init__.py").write_text("")
    (pkg / "worker" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "worker" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
        "from ..errors import X\n")
    (pkg / "errors.py").write_text("")
    known = {ROOT, f"{ROOT}.errors", f"{ROOT}.worker", f"{ROOT}.worker.a", f"{ROOT}.worker.b"}
    edges = {f"{ROOT}.worker.{m}": imports_of(f"{ROOT}.worker.{m}", pkg / "worker" / f"{m}.py",
                                               known) for m in ("a", "b")}
    assert edges[f"{ROOT}.worker.a"] == {f"{ROOT}.worker.b"}
    assert edges[f"{ROOT}.worker.b"] == {f"{ROOT}.worker.a", f"{ROOT}.errors"}
    assert find_cycle(edges) == [f"{ROOT}.worker.a", f"{ROOT}.worker.b", f"{ROOT}.worker.a"]


def test_no_module_is_too_long():
    """One module, one job: past ~500 lines a module is usually two."""
    long = {}
    for name, path in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in LONG_MODULES:
            long[name] = lines
    assert not long, (f"modules over {MAX_LINES} lines (split them by job): "
                      + ", ".join(f"{n} ({k})" for n, k in sorted(long.items())))
    stale = [n for n in LONG_MODULES
             if n not in modules() or len(modules()[n].read_text().splitlines()) <= MAX_LINES]
    assert not stale, f"no longer long, drop from LONG_MODULES: {stale}"


def test_the_documented_entry_points_import():
    """`--preload modelops_runtime.preload` (chart, DESIGN) and the client API users import."""
    import importlib

    preload = importlib.import_module("modelops_runtime.preload")
    assert callable(preload.dask_setup) and callable(preload.dask_teardown)
    client = importlib.import_module("modelops_runtime.client")
    for name in ("submit", "aggregate", "gather_study", "task_key", "run_simulation",
                 "run_aggregation", "StudyResult", "TaskFailure", "cluster_stats", "SimTask",
                 "SimResult", "submit_study", "StudyPlan", "ParamSet", "Seeds",
                 "StudySetsResult"):
        assert hasattr(client, name), name


def room_of(module: str, path: Path) -> str:
    """The folder a module lives in (a package's ``__init__`` lives in its own folder); the
    top level's modules (the contracts, the preload entry point) are rooms of their own."""
    room = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return module if room == ROOT else room


def test_no_circles_between_rooms():
    """A side's parts are sub-packages, and a walk through them goes down, never back into
    a room already left (e.g. local.study → local.compare → local.study)."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        room = room_of(name, mods[name])
        for target in targets:
            other = room_of(target, mods[target])
            # a package's __init__ may re-export its parts: that is the room looking inward
            if other != room and not (mods[name].name == "__init__.py" and other.startswith(room + ".")):
                edges.setdefault(room, set()).add(other)
    cycle = find_cycle(edges)
    assert cycle is None, "rooms importing each other: " + " → ".join(cycle)


def test_no_private_name_is_imported_across_modules():
    wrong = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(ROOT)):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        wrong.append(f"{name} imports {alias.name} from {'.' * node.level}{node.module or ''}")
    assert not wrong, "private names imported across modules (make them public or move them):\n" + "\n".join(wrong)


def test_each_exit_code_is_defined_once():
    """Exit codes have one owner (exitcodes.py, as pip's cli/status_codes.py)."""
    owners = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name) and t.id.startswith("EXIT_") and t.id != "EXIT_CODES":
                        owners.setdefault(t.id, []).append(name)
    wrong = {k: v for k, v in owners.items() if v != [f"{ROOT}.exitcodes"]}
    assert not wrong, f"exit codes defined outside modelops_runtime.exitcodes: {wrong}"


def test_the_parts_show_as_sub_packages():
    """The warm pool's parts and local mode's families are folders a reader can open."""
    for part in ("worker/warm/runner", "worker/warm/venvs", "local/cluster", "local/study",
                 "local/compare", "local/diagnose"):
        assert (PKG / part / "__init__.py").is_file(), part
