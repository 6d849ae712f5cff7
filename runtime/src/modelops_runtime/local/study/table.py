"""``--results FILE.parquet`` / ``FILE.csv``: the runs as a table, one row per (set, seed),
so that the next step is one ``pandas.read_parquet`` (or ``read_csv``).

Columns: ``study``, ``set_id``, ``set_label``, ``set_index``, ``seed``, ``ok``,
``error_type``, ``error_message``, then ``param.<name>`` per parameter and
``output.<name>`` per output (a non-scalar output as JSON text), then the execution
metadata (``executor``, ``pid``, ``process_task_count``, ``venv_cache_hit``,
``duration_s``, ``worker``). Parquet goes through pyarrow (``modelops-runtime[parquet]``);
CSV needs nothing but the standard library.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..results import StudyRun, plain_json

TABLE_SUFFIXES = (".parquet", ".csv")
META = ("executor", "pid", "process_task_count", "venv_cache_hit", "duration_s", "worker")


def is_table(path: Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES


def check_table_target(path: Path) -> None:
    """Before anything runs: a Parquet file needs pyarrow (ValueError saying what to do)."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError(f"--results {path}: writing Parquet needs pyarrow, which is not "
                             "installed here; pip install pyarrow (or "
                             "'modelops-runtime[parquet]'), or write --results "
                             f"{path.with_suffix('.csv')} instead") from None


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(plain_json(value))


def rows(run: StudyRun) -> Iterator[dict[str, Any]]:
    """One dict per (set, seed), in set order then seed order."""
    sets = {s.id: s for s in run.param_sets}
    per_run: list[tuple[str | None, int, Any, Any]] = \
        [(r.set, r.seed, r.result, None) for r in run.sims] + \
        [(f.set, f.seed, None, f) for f in run.failures]
    order = {s.id: s.index for s in run.param_sets}
    per_run.sort(key=lambda t: (order.get(t[0] or "", 0), t[1]))
    for set_id, seed, result, failure in per_run:
        s = sets.get(set_id or "")
        row: dict[str, Any] = {
            "study": run.study, "set_id": set_id, "set_label": s.label if s else None,
            "set_index": s.index if s else None, "seed": seed, "ok": failure is None,
            "error_type": failure.error_type if failure else None,
            "error_message": failure.message if failure else None}
        for k, v in (s.params.items() if s else ()):
            row[f"param.{k}"] = v
        outputs = result.outputs if result is not None else {}
        if isinstance(outputs, dict):
            for k, v in outputs.items():
                row[f"output.{k}"] = _scalar(v)
        else:
            row["output"] = _scalar(outputs)
        for k in META:
            row[k] = getattr(result, k) if result is not None else None
        yield row


def _columns(table: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for r in table for k in r))
    cols = {n: [r.get(n) for r in table] for n in names}
    for n, values in cols.items():       # one type per column: ints with floats are floats,
        kinds = {type(v) for v in values if v is not None}      # anything else mixed: text
        if kinds == {int, float}:
            cols[n] = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:
            cols[n] = [None if v is None else str(v) for v in values]
    return cols


def write_table(run: StudyRun, path: Path) -> int:
    """Write the table (Parquet or CSV by the suffix); returns the number of rows."""
    table = list(rows(run))
    cols = _columns(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    else:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(cols))
            for i in range(len(table)):
                writer.writerow(["" if v[i] is None else _csv_cell(v[i]) for v in cols.values()])
    return len(table)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)   # nan, inf, -inf: what pandas.read_csv reads back
    return value
