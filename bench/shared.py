"""What the benchmarks take from the rest of the repo instead of copying it: the test
suite's bundle and wheel helpers (tests/support) and the README section writer of
ci/values_table.py. Importing this module puts those two folders on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _folder in (REPO / "tests", REPO / "ci"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

from support.bundles import write_bundle  # noqa: E402
from support.wheels import _record_hash as record_hash  # noqa: E402
from values_table import replace_between  # noqa: E402

__all__ = ["REPO", "record_hash", "replace_between", "write_bundle"]
