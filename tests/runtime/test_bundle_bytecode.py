"""A bundle's Python files are compiled once per pod, beside the bundle (bundles/bytecode.py),
and every warm process imports the bundle's modules from that bytecode (runner
pycache.py) -- only while it matches the source byte for byte (its checked hash).

Real BundleStore, real uv venvs, real warm processes in every mode (reused, forked from a
template, exec'd).
"""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from modelops_runtime.bundles import bytecode_dir
from modelops_runtime.bundles.manifest import tree_problem
from modelops_runtime.models import Call
from support.bundles import make_bundle

MODEL = '''
ANSWER = "source"


def run(params, seed):
    import sys
    return {"answer": ANSWER, "precompiled": type(__loader__).__name__,
            "cached": __cached__, "file": __file__}
'''

MODES = [{}, {"max_process_reuse": 1}, {"max_process_reuse": 1, "fresh_process_from": "exec"}]
IDS = ["reused", "from-template", "exec"]


def _unpacked(ex, ref: str) -> Path:
    return ex.bundles.path(ref)


def _forge(pyc: Path, source_for_hash: bytes, code_source: str, filename: str) -> None:
    """Write a checked-hash pyc whose header names ``source_for_hash`` and whose code is
    ``code_source``'s (what only the worker could write: the test stands in for it)."""
    code = compile(code_source, filename, "exec", dont_inherit=True)
    data = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
    data += importlib.util.source_hash(source_for_hash)
    import marshal
    data += marshal.dumps(code)
    os.chmod(pyc.parent, 0o755)
    os.chmod(pyc, 0o644)
    pyc.write_bytes(data)
    os.chmod(pyc, 0o444)
    os.chmod(pyc.parent, 0o555)


def test_unpacking_compiles_beside_the_bundle_never_inside(tmp_path, warm):
    ex = warm()
    ref = make_bundle(tmp_path / "src", tmp_path / "repo",
                      {"pkg/__init__.py": "", "pkg/m.py": MODEL, "broken.py": "def (:\n"})
    bundle = _unpacked(ex, ref)
    compiled = bytecode_dir(bundle)
    assert compiled.parent.parent == bundle.parent  # <cache>/.bytecode/<digest>
    assert sorted(p.relative_to(compiled).as_posix() for p in compiled.rglob("*.pyc")) == \
        ["pkg/__init__.pyc", "pkg/m.pyc"]  # the file that does not compile is left out
    data = (compiled / "pkg" / "m.pyc").read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b11  # checked hash
    assert data[8:16] == importlib.util.source_hash((bundle / "pkg" / "m.py").read_bytes())
    assert not stat.S_IMODE((compiled / "pkg" / "m.pyc").stat().st_mode) & 0o222
    # the bundle itself is exactly the archive's files
    assert not list(bundle.rglob("__pycache__"))
    digest = ref.split(":")[1]
    assert tree_problem(bundle, ex.bundles.cache_dir / ".manifests" / f"{digest}.json") is None


@pytest.mark.parametrize("settings", MODES, ids=IDS)
def test_every_mode_imports_the_bundle_from_the_workers_bytecode(tmp_path, warm, settings):
    """Only the worker's pyc can explain the answer: its code says "bytecode" while the
    source says "source", and its header carries the source's hash."""
    ex = warm(**settings)
    ref = make_bundle(tmp_path / "src", tmp_path / "repo", {"m.py": MODEL})
    bundle = _unpacked(ex, ref)
    source = (bundle / "m.py").read_bytes()
    _forge(bytecode_dir(bundle) / "m.pyc", source, MODEL.replace('"source"', '"bytecode"'),
           str(bundle / "m.py"))
    for seed in range(2):
        out = ex.run(Call(bundle=ref, entrypoint="m:run", args=({}, seed))).outputs
        assert out["answer"] == "bytecode", out
        # what the module sees of its own files is what it saw before
        assert out["file"] == str(bundle / "m.py")
        assert out["cached"] == str(bundle / "__pycache__" / importlib.util.cache_from_source(
            "m.py").rpartition("/")[2])
        assert out["precompiled"] == "BundleSourceLoader"


@pytest.mark.parametrize("settings", MODES, ids=IDS)
def test_bytecode_that_does_not_match_the_source_is_never_used(tmp_path, warm, settings):
    """A pyc whose hash is not the source's (the source changed, or the pyc is another
    file's) is ignored: the source is compiled, as without bytecode."""
    ex = warm(**settings)
    ref = make_bundle(tmp_path / "src", tmp_path / "repo", {"m.py": MODEL})
    bundle = _unpacked(ex, ref)
    other = MODEL.replace('"source"', '"bytecode"')
    _forge(bytecode_dir(bundle) / "m.pyc", other.encode(), other, str(bundle / "m.py"))
    out = ex.run(Call(bundle=ref, entrypoint="m:run", args=({}, 0))).outputs
    assert out["answer"] == "source", out
