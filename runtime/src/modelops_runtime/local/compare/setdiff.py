"""Which parameter set changed between two runs' inputs, named by its param.

Set ids are content hashes, so a set whose ``beta`` changed has a new id: matching by id
alone would only say "the runs share no set". When the sets of two runs differ and neither
holds the other (a rerun of some sets, or an extended grid, is comparable on the sets both
have), the sets are matched by their position in the study and the first difference is
named: ``param 'beta' of set 3 of 6 differs: 0.3 in A, 0.35 in B``.
"""

from __future__ import annotations

from typing import Any

from ..results import RunInputs


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _name(inputs: RunInputs, set_id: str, index: int, total: int) -> str:
    label = inputs.labels.get(set_id)
    return f"set {index + 1} of {total}" + (f" ({label!r})" if label else "")


def sets_difference(a: RunInputs, b: RunInputs, a_label: str, b_label: str) -> str | None:
    """One line naming the set (and param) that differs, or None when the runs share their
    sets or one run's sets are a subset of the other's (compared on the common ones)."""
    ids_a, ids_b = list(a.sets), list(b.sets)
    if set(ids_a) <= set(ids_b) or set(ids_b) <= set(ids_a):
        return None
    total = len(ids_a)
    for i, (ia, ib) in enumerate(zip(ids_a, ids_b)):
        if ia == ib:
            continue
        pa, pb = a.sets[ia], b.sets[ib]
        for name in sorted(set(pa) | set(pb)):
            va, vb = pa.get(name, _MISSING), pb.get(name, _MISSING)
            if va != vb or type(va) is not type(vb):
                show_a = "(not set)" if va is _MISSING else _short(va)
                show_b = "(not set)" if vb is _MISSING else _short(vb)
                return (f"param {name!r} of {_name(a, ia, i, total)} differs: {show_a} in "
                        f"{a_label}, {show_b} in {b_label}")
        la, lb = a.labels.get(ia), b.labels.get(ib)
        if la != lb:
            return (f"the label of set {i + 1} of {total} differs: {la!r} in {a_label}, "
                    f"{lb!r} in {b_label}")
    if len(ids_a) != len(ids_b):
        return (f"the study has {len(ids_a)} parameter sets in {a_label} and {len(ids_b)} in "
                f"{b_label}, and the first {min(len(ids_a), len(ids_b))} differ in order")
    return None


_MISSING = object()
