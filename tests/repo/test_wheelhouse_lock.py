"""The tests' wheelhouse lock (ci/wheelhouse/requirements.lock, `make lock`) matches
ci/wheelhouse/requirements.in, and the fetched wheelhouse is checked against it: a changed
requirement without a new lock, or a wheel the lock does not allow, fails here, offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support.wheelhouse import SCRIPT, lock_module, require_wheelhouse


def _check(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=60)


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "ci" / "wheelhouse"
    shutil.copytree(SCRIPT.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(SCRIPT.parent.parent / "lockcheck.py", tmp_path / "ci" / "lockcheck.py")
    return copy


def test_the_checked_in_lock_is_current():
    out = _check(SCRIPT)
    assert out.returncode == 0, out.stderr


def test_the_lock_pins_every_real_package_with_hashes():
    lock = lock_module()
    pinned = lock.pins(lock.LOCK.read_text())
    for name in ("starsim", "numpy", "scipy", "pandas", "numba", "llvmlite", "matplotlib",
                 "joblib"):
        assert pinned[name][1], f"{name} is pinned without hashes"
    assert pinned["starsim"][0] == "3.7.2"
    for line in lock.LOCK.read_text().splitlines()[2:]:
        assert "==" not in line or line.rstrip().endswith("\\"), f"unhashed pin {line}"


def test_a_changed_requirement_makes_the_lock_stale(tmp_path):
    copy = _copy(tmp_path)
    inputs = copy / "requirements.in"
    inputs.write_text(inputs.read_text() + "rich>=13\n")
    out = _check(copy / "wheelhouse.py")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("wheelhouse: ci/wheelhouse/requirements.lock was resolved from "
                               "other inputs than requirements.in's"), out.stderr
    assert ("wheelhouse: ci/wheelhouse/requirements.lock pins no rich (rich>=13 is required)"
            in lines)
    assert lines[-1] == "wheelhouse: the tests' lock is stale; run `make lock` and commit it."


def test_a_pin_outside_the_requirement_is_named(tmp_path):
    copy = _copy(tmp_path)
    inputs = copy / "requirements.in"
    inputs.write_text(inputs.read_text().replace("starsim==3.7.2", "starsim>=99"))
    out = _check(copy / "wheelhouse.py")
    assert out.returncode == 1
    assert "pins starsim==3.7.2, outside starsim>=99" in out.stderr, out.stderr


def test_a_missing_lock_is_named(tmp_path):
    copy = _copy(tmp_path)
    (copy / "requirements.lock").unlink()
    out = _check(copy / "wheelhouse.py")
    assert out.returncode == 1
    assert "wheelhouse: ci/wheelhouse/requirements.lock is missing" in out.stderr


def test_a_tampered_wheel_is_not_complete_and_is_named(tmp_path):
    """The wheelhouse the install step fetched holds exactly the lock's wheels; a wheel
    replaced afterwards (same name, other bytes) is found, and `fetch` would replace it."""
    wheels = require_wheelhouse()
    lock = lock_module()
    copy = tmp_path / "wh"
    shutil.copytree(wheels, copy, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    assert lock.complete(copy)
    joblib = next(copy.glob("joblib-*.whl"))
    joblib.unlink()
    joblib.write_bytes(b"not the locked wheel")
    assert not lock.complete(copy)
    missing = f"no wheel for joblib=={lock.pins(lock.LOCK.read_text())['joblib'][0]}"
    assert lock.verify(copy) == [f"{joblib.name} has a hash the lock does not allow", missing]
    joblib.unlink()
    assert lock.verify(copy) == [missing]
