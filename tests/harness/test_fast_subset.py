"""`make test-fast` selects what it says: every test but those marked as starting an API
server, a container, a series of preset clusters or the `local` command's whole cluster, or
measured slow, and those marks are where they must be (tests/support/markers.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from support.markers import HEAVY
from support.paths import REPO


def _selected(expression: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m",
                          expression, "-p", "no:cacheprovider"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 5), out.stdout[-3000:] + out.stderr[-3000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_the_fast_subset_leaves_out_the_heavy_tests_and_keeps_the_rest():
    fast = re.search(r"^FAST := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert fast == " and ".join(f"not {mark}" for mark in HEAVY)  # the complement of:
    heavy = _selected(" or ".join(HEAVY))
    assert not [t for t in heavy if not t.startswith(("tests/cluster/", "tests/e2e/", "tests/chart/",
                                                        "tests/observability/",
                                                        "tests/realmodels/",
                                                        "tests/runtime/"))]
    for where in ("tests/cluster/apiserver/", "tests/cluster/containers/",
                  "tests/e2e/test_local_presets.py", "tests/e2e/test_diagnose.py",
                  "tests/e2e/test_local_lifecycle.py", "tests/runtime/test_fresh_equivalence.py",
                  "tests/chart/test_chart_bad_values.py"):
        assert [t for t in heavy if t.startswith(where)], f"nothing of {where} is marked"
    assert not [t for t in heavy if t.startswith("tests/chart/") and "helm3" in t]
    assert "make test-fast" in (REPO / "README.md").read_text()
