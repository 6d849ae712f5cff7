"""What the local commands print for a person: one place that owns console output.

- covers: ``Echo`` (the callable every local part prints through) and ``echo``, the default.
- does not: format figures or tables (study/report.py, diagnose/report.py do).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Echo = Callable[[str], None]


def echo(msg: str) -> None:
    """One line to stdout, flushed (a piped log shows it at once)."""
    print(msg, file=sys.stdout, flush=True)
