"""Where things are, for every test module: the repository, the chart, the presets, the
tools `make tools` builds (one definition; modules import these names, never copy them)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
CHART = REPO / "chart"
PRESETS_DIR = REPO / "values-examples"
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
TOOLS = REPO / ".tools" / "bin"
HELMS = {"helm3": TOOLS / "helm", "helm4": TOOLS / "helm4"}
# The user's own values file every install starts with (the chart needs bundles.repo).
MY_VALUES = TESTS / "chart" / "my-values.yaml"


def helm_binary(name: str) -> Path:
    """The built helm ``name`` (helm3, helm4), or a clear failure saying how to build it."""
    path = HELMS[name]
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(
            f"{name} is not installed at {path}: run `make tools` (ci/install-tools.sh) first")
    return path
