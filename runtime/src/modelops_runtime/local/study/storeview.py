"""What ``modelops-runtime results URL`` prints about a results store: runs done, failed
and missing, per set, the aggregates the last complete study stored, the first failures;
and ``--table``: every run in one Parquet or CSV file.

- covers: :func:`summary_lines`, :func:`write_store_table`.
- does not: open or repair the store (client/store/store.py; opened read-only here).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...client.store.store import ResultsStore
from .report import SHOWN_FAILURES, SHOWN_SETS, table

SHOWN_OUTPUTS = 6


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _scalars(outputs: Any) -> dict[str, Any]:
    if not isinstance(outputs, Mapping):
        return {}
    return {k: v for k, v in outputs.items() if not isinstance(v, (list, dict))}


def summary_lines(store: ResultsStore) -> list[str]:
    m = store.manifest
    inputs = m.inputs
    ok, failed, missing = store.counts()
    total = inputs.runs
    lines = [f"results store {store.url}: study {m.study}, {len(inputs.sets):,} set(s) × "
             f"{inputs.seeds_count:,} seeds ({inputs.seeds_first}..{inputs.seeds_first + inputs.seeds_count - 1}) "
             f"of {inputs.entrypoint}, bundle {inputs.bundle[:19]}…",
             f"runs: {ok + failed:,} of {total:,} done ({failed:,} failed), {missing:,} missing; "
             f"{len(m.parts)} part(s)"]
    lines += [f"note: {n}" for n in store.notes]
    stored = store.aggregates() or {}
    per_set = stored.get("sets") or {}
    current = all(per_set.get(s.id, {}).get("runs") == store.set_counts(s.id)[0]
                  for s in inputs.sets) and per_set
    if not current:
        per_set = {}
        if missing == 0 and inputs.aggregate:
            lines.append("aggregates: none stored for these runs (the last study stopped "
                         "before aggregating): rerun the study to make them")
        elif missing:
            lines.append("aggregates: made once no run is missing (rerun the study)")
    names = list(dict.fromkeys(k for s in inputs.sets for k in s.params
                               if len({repr(x.params.get(k)) for x in inputs.sets}) > 1))
    outs: list[str] = []
    for v in per_set.values():
        agg = v.get("aggregate") or {}
        outs += [k for k in _scalars(agg.get("outputs")) if k not in outs]
    outs = outs[:SHOWN_OUTPUTS]
    labelled = any(s.label for s in inputs.sets)
    rows = [(["label"] if labelled else []) + ["set"] + names +
            ["ok", "failed", "missing"] + outs]
    for s in inputs.sets[:SHOWN_SETS]:
        s_ok, s_failed, s_missing = store.set_counts(s.id)
        agg = _scalars(((per_set.get(s.id) or {}).get("aggregate") or {}).get("outputs"))
        rows.append(([s.label or ""] if labelled else []) + [s.id] +
                    [_cell(s.params.get(k, "")) for k in names] +
                    [str(s_ok), str(s_failed), str(s_missing)] +
                    [_cell(agg[k]) if k in agg else "-" for k in outs])
    lines.append(f"per set{f' ({inputs.aggregate} per set)' if per_set else ''}:")
    lines += [f"  {line}" for line in table(rows)]
    if len(inputs.sets) > SHOWN_SETS:
        lines.append(f"  ... and {len(inputs.sets) - SHOWN_SETS} more sets (--table FILE "
                     "writes every run)")
    across = (stored.get("across") or {}) if per_set else {}
    if across.get("aggregate"):
        lines.append(f"aggregate ({inputs.aggregate_sets} across sets):")
        out = across["aggregate"]["outputs"]
        items = out.items() if isinstance(out, Mapping) else [("value", out)]
        width = max((len(str(k)) for k, _ in items), default=0)
        lines += [f"  {str(k):<{width}}  {v}" for k, v in items]
    elif across.get("error"):
        lines.append(f"aggregate ({inputs.aggregate_sets} across sets) failed: {across['error']}")
    if failed:
        import pyarrow.compute as pc

        t = store.table(columns=["set_id", "set_label", "seed", "ok", "error_type",
                                 "error_message"])
        t = t.filter(pc.equal(t["ok"], False)).slice(0, SHOWN_FAILURES)
        for r in t.to_pylist():
            first = (r["error_message"] or "").splitlines()[:1]
            lines.append(f"  set {r['set_label'] or r['set_id']} seed {r['seed']} failed: "
                         f"{r['error_type']}: {first[0] if first else ''}")
        if failed > SHOWN_FAILURES:
            lines.append(f"  ... and {failed - SHOWN_FAILURES} more failed (--table FILE "
                         "writes every run)")
    return lines


def write_store_table(store: ResultsStore, path: Path) -> int:
    """Every run of the store as one file (.parquet or .csv by the suffix); the rows."""
    t = store.table()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(t, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(t, path)
    return t.num_rows
