"""A results store's parts: one row per (set, seed) run, as Parquet.

- covers: a run's row (``param.*``, ``output.*``, the exact outputs as JSON, the execution
  metadata, the environment digest, the typed error of a failed run); the column types
  (fixed per store, so every part has one schema); a part's bytes; reading parts back.
- does not: decide when a part is written or published (store.py).

Columns: ``study``, ``set_id``, ``set_label``, ``set_index``, ``seed``, ``ok``,
``error_type``, ``error_message``, ``param.<name>``, ``output.<name>`` (numbers as float64,
text, bools; anything else as JSON text), ``outputs`` (the run's outputs exactly, as JSON:
what aggregates are computed from), then ``executor``, ``pid``, ``process_task_count``,
``venv_cache_hit``, ``duration_s``, ``worker``, ``env_digest``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import Any


FIXED = (("study", "string"), ("set_id", "string"), ("set_label", "string"),
         ("set_index", "int64"), ("seed", "int64"), ("ok", "bool"),
         ("error_type", "string"), ("error_message", "string"))
META = (("outputs", "string"), ("executor", "string"), ("pid", "int64"),
        ("process_task_count", "int64"), ("venv_cache_hit", "bool"),
        ("duration_s", "double"), ("worker", "string"), ("env_digest", "string"))
KEY_COLUMNS = ["set_id", "seed", "ok"]


def _fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):      # numpy scalars and arrays: their plain-Python value
        return value.tolist()
    return str(value)


def to_json(value: Any) -> str:
    """The exact JSON text of outputs (NaN and ±inf kept, as ``--results`` keeps them)."""
    return json.dumps(value, default=_fallback)


def kind_of(value: Any) -> str | None:
    """The column type a value asks for (None: no opinion yet)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "double"
    return "string"


def param_types(sets: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``param.<name>`` → type over every set (ints stay ints unless a set has a float)."""
    kinds: dict[str, set[type]] = {}
    for params in sets:
        for k, v in params.items():
            kinds.setdefault(k, set()).add(type(v))
    out = {}
    for k, ts in kinds.items():
        ts.discard(type(None))
        if ts == {bool}:
            out[f"param.{k}"] = "bool"
        elif ts == {int}:
            out[f"param.{k}"] = "int64"
        elif ts and ts <= {int, float}:
            out[f"param.{k}"] = "double"
        else:
            out[f"param.{k}"] = "string"
    return out


def conform(value: Any, kind: str) -> Any:
    """``value`` as a cell of a ``kind`` column (a value that does not fit is null there;
    the ``outputs`` column keeps it exactly)."""
    if value is None:
        return None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind in ("double", "int64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if kind == "int64":
            return value if isinstance(value, int) else None
        return float(value)
    return value if isinstance(value, str) else to_json(value)


def row_of(study: str, out) -> dict[str, Any]:
    """One run (a client RunOutcome) as a row (values not yet conformed to the store's column types)."""
    s = out.set
    row: dict[str, Any] = {"study": study, "set_id": s.id, "set_label": s.label,
                           "set_index": s.index, "seed": out.seed, "ok": out.ok}
    for k, v in s.params.items():
        row[f"param.{k}"] = v
    if out.ok:
        r = out.result
        row.update(error_type=None, error_message=None, outputs=to_json(r.outputs),
                   executor=r.executor, pid=r.pid, process_task_count=r.process_task_count,
                   venv_cache_hit=r.venv_cache_hit, duration_s=r.duration_s, worker=r.worker,
                   env_digest=r.env_digest)
        if isinstance(r.outputs, Mapping):
            for k, v in r.outputs.items():
                row[f"output.{k}"] = v
    else:
        f = out.failure
        row.update(error_type=f.error_type, error_message=f.message)
    return row


def grow_columns(columns: dict[str, str], rows: list[dict[str, Any]]) -> bool:
    """Add the ``output.*`` columns first seen in ``rows`` (type from the first non-null
    value); True if any was added."""
    added = False
    for row in rows:
        for k, v in row.items():
            if k.startswith("output.") and k not in columns:
                kind = kind_of(v)
                if kind is not None:
                    columns[k] = kind
                    added = True
    return added


def schema(columns: Mapping[str, str]):
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(),
             "bool": pa.bool_()}
    names = [*FIXED, *sorted((k, v) for k, v in columns.items() if k.startswith("param.")),
             *sorted((k, v) for k, v in columns.items() if k.startswith("output.")), *META]
    return pa.schema([(n, types[t]) for n, t in names])


def part_bytes(rows: list[dict[str, Any]], columns: Mapping[str, str]) -> bytes:
    """The Parquet bytes of ``rows`` with the store's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sch = schema(columns)
    kinds = {**dict(FIXED), **dict(META), **columns}
    data = {n: [conform(r.get(n), kinds[n]) for r in rows] for n in sch.names}
    buf = io.BytesIO()
    pq.write_table(pa.table(data, schema=sch), buf)
    return buf.getvalue()


def read_part(fs: Any, path: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


