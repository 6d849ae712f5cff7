"""Read and edit a rendered container's argv: ``--opt value`` and ``--opt=value`` alike.

- covers: finding, reading, replacing and dropping one option (as click parses them).
- does not: know any option's meaning (render.py and launch.py do).
"""

from __future__ import annotations

from collections.abc import Sequence

def _find(args: Sequence[str], opt: str) -> tuple[int, bool] | None:
    for i, a in enumerate(args):
        if a == opt and i + 1 < len(args):
            return i, False
        if a.startswith(opt + "="):
            return i, True
    return None


def get_opt(args: Sequence[str], opt: str) -> str | None:
    hit = _find(args, opt)
    if hit is None:
        return None
    i, joined = hit
    return args[i].split("=", 1)[1] if joined else args[i + 1]


def set_opt(args: list[str], opt: str, value: str) -> list[str]:
    """Replace the option's value in place (or append it), keeping the rest of argv."""
    out = drop_opt(list(args), opt)
    hit = _find(args, opt)
    if hit is None:
        return out + [opt, value]
    i = hit[0]
    return out[:i] + [opt, value] + out[i:]


def drop_opt(args: list[str], opt: str) -> list[str]:
    hit = _find(args, opt)
    if hit is None:
        return list(args)
    i, joined = hit
    return list(args[:i]) + list(args[i + (1 if joined else 2):])

