"""A study's parameter sets, expanded lazily: ``grid`` (every combination), ``sets`` (a
list) and ``sets_file`` (CSV or Parquet, one row per set). Each source is sized and
re-iterable and builds one :class:`~..client.plan.ParamSet` at a time, so a study of
100,000 runs is never one list in memory. Everything that can be wrong with a source is
found when it is made (a first pass over a sets file that keeps only row ids), so a bad
row is one clear error before anything starts.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...client.plan import ParamSet, canonical_params

LABEL = "label"                     # the optional label column / key of a set
PARQUET_BATCH = 4096                # rows read at a time from a Parquet file
_INT = re.compile(r"^[+-]?\d+$")
SCALARS = "a number, text, true/false or null"
CELLS = "a number, text or true/false"


# -- checks shared with the study file ----------------------------------------------------

def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: parameter name {name!r} must be non-empty text")
    return name


def check_scalar(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    kind = ("a list" if isinstance(value, (list, tuple)) else "a mapping"
            if isinstance(value, Mapping) else f"a {type(value).__name__}")
    raise ValueError(f"{where} is {kind} ({value!r}): every parameter value must be a "
                     f"scalar ({SCALARS}); a set is one value per parameter")


def check_label(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{where} is {value!r}: a label is non-empty text")
    return str(value)


class _Unique:
    """Refuses a second set with the same params (and label) or the same label; keeps only
    short digests, not the sets."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.ids: dict[str, str] = {}
        self.labels: dict[str, str] = {}

    def add(self, params: Mapping[str, Any], label: str | None, where: str) -> None:
        if label is not None:
            if label in self.labels:
                raise ValueError(f"{self.what}: label {label!r} is used twice ({self.labels[label]} "
                                 f"and {where}); every set's label must be unique")
            self.labels[label] = where
        digest = hashlib.sha256(f"{label}\0{canonical_params(params)}".encode()).hexdigest()[:16]
        if digest in self.ids:
            raise ValueError(f"{self.what}: {where} repeats the set of {self.ids[digest]} "
                             f"({canonical_params(params)}); every set once (or give them "
                             "different labels to run one twice)")
        self.ids[digest] = where


# -- the three sources ----------------------------------------------------------------------

class OneSet:
    """A study's one set (``params:`` alone), under a fixed id."""

    def __init__(self, set_id: str, params: Mapping[str, Any]) -> None:
        self.set_id, self.params = set_id, dict(params)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[ParamSet]:
        yield ParamSet(id=self.set_id, params=dict(self.params))


class GridSets:
    """Every combination of the grid's values (the last parameter varies fastest)."""

    def __init__(self, grid: Mapping[str, Sequence[Any]], base: Mapping[str, Any]) -> None:
        self.names = list(grid)
        self.values = [list(grid[k]) for k in self.names]
        self.base = dict(base)

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.values)

    def __iter__(self) -> Iterator[ParamSet]:
        for i, combo in enumerate(itertools.product(*self.values)):
            yield ParamSet.of({**self.base, **dict(zip(self.names, combo))}, index=i)


class ListSets:
    """The ``sets:`` list of the study file (each dict may carry a ``label``)."""

    def __init__(self, sets: Sequence[Mapping[str, Any]], base: Mapping[str, Any]) -> None:
        self.sets, self.base = list(sets), dict(base)
        unique = _Unique("sets")
        for i, s in enumerate(self.sets):
            label = s.get(LABEL)
            unique.add(self._params(s), None if label is None else str(label), f"sets[{i}]")

    def _params(self, s: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.base, **{k: v for k, v in s.items() if k != LABEL}}

    def __len__(self) -> int:
        return len(self.sets)

    def __iter__(self) -> Iterator[ParamSet]:
        for i, s in enumerate(self.sets):
            label = s.get(LABEL)
            yield ParamSet.of(self._params(s), None if label is None else str(label), index=i)


@dataclass
class SetsFile:
    """A checked sets file: its columns, how each is typed, how many rows."""

    path: Path
    kind: str                                 # "csv" or "parquet"
    columns: list[str]
    params: list[str]                         # the columns that are parameters (not label)
    convert: dict[str, Callable[[str], Any]] = field(default_factory=dict)   # csv only
    rows: int = 0

    def iter_rows(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """(label, params) per row, typed."""
        if self.kind == "parquet":
            for _, row in _parquet_rows(self.path):
                yield self._split({k: row[k] for k in self.columns})
        else:
            for _, row in _csv_rows(self.path):
                yield self._split({k: (v if k == LABEL else self.convert[k](v))
                                   for k, v in row.items()})

    @staticmethod
    def _split(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        label = row.pop(LABEL, None)
        return (None if label is None else str(label)), row


class FileSets:
    """The rows of a sets file, re-read on every pass."""

    def __init__(self, info: SetsFile, base: Mapping[str, Any]) -> None:
        self.info, self.base = info, dict(base)

    def __len__(self) -> int:
        return self.info.rows

    def __iter__(self) -> Iterator[ParamSet]:
        for i, (label, params) in enumerate(self.info.iter_rows()):
            yield ParamSet.of({**self.base, **params}, label, index=i)


# -- reading sets files ---------------------------------------------------------------------

def read_sets_file(path: Path) -> SetsFile:
    """Check every row of a CSV or Parquet sets file (one pass, nothing kept but digests)."""
    if not path.is_file():
        raise ValueError(f"sets_file {path} does not exist (it is relative to the study file)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _check_csv(path)
    if suffix in (".parquet", ".pq"):
        return _check_parquet(path)
    raise ValueError(f"sets_file {path}: unknown format {suffix or '(no suffix)'}; give a "
                     ".csv or .parquet file, one row per set")


def _check_columns(path: Path, columns: list[str]) -> list[str]:
    where = f"sets_file {path}"
    for c in columns:
        check_name(c, f"{where}: header")
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise ValueError(f"{where}: column {dup[0]!r} appears twice in the header")
    params = [c for c in columns if c != LABEL]
    if not params:
        raise ValueError(f"{where} has no parameter columns: one column per parameter, one "
                         f"row per set (and an optional {LABEL!r} column)")
    return params


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, raw cells by column) per non-blank row; ragged rows refused."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) < len(header):
                missing = ", ".join(header[len(row):])
                raise ValueError(f"sets_file {path} line {line}: no value for column(s) "
                                 f"{missing} (the row has {len(row)} cells, the header "
                                 f"{len(header)}); every set needs every column")
            if len(row) > len(header):
                raise ValueError(f"sets_file {path} line {line} has {len(row)} cells but the "
                                 f"header names {len(header)} columns ({', '.join(header)})")
            yield line, dict(zip(header, (c.strip() for c in row)))


def _as_bool(text: str) -> bool:
    low = text.lower()
    if low not in ("true", "false"):
        raise ValueError(text)
    return low == "true"


def _check_csv(path: Path) -> SetsFile:
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    if not header:
        raise ValueError(f"sets_file {path} is empty: its first line names the columns "
                         "(one per parameter), then one row per set")
    params = _check_columns(path, header)
    # a column is int if every cell is, else float, else true/false, else text
    kinds = {c: {"int", "float", "bool"} for c in params}
    rows = 0
    for line, row in _csv_rows(path):
        for c, cell in row.items():
            if not cell:
                raise ValueError(f"sets_file {path} line {line}: column {c} is empty; every "
                                 "set needs a value in every column (a value every set shares "
                                 "belongs in the study's params)")
            if cell[0] in "[{":
                raise ValueError(f"sets_file {path} line {line}: column {c} holds {cell!r}, a "
                                 f"list or mapping; every cell must be a scalar ({CELLS})")
            if c == LABEL:
                continue
            k = kinds[c]
            if "int" in k and not _INT.match(cell):
                k.discard("int")
            if "float" in k:
                try:
                    float(cell)
                except ValueError:
                    k.discard("float")
            if "bool" in k and cell.lower() not in ("true", "false"):
                k.discard("bool")
        rows += 1
    if not rows:
        raise ValueError(f"sets_file {path} has a header but no rows: give one row per set")
    convert = {c: (int if "int" in k else float if "float" in k else _as_bool if "bool" in k
                   else str) for c, k in kinds.items()}
    info = SetsFile(path=path, kind="csv", columns=header, params=params, convert=convert,
                    rows=rows)
    unique = _Unique(f"sets_file {path}")   # on the typed values: 0.3 and 0.30 are one set
    for (line, _), (label, values) in zip(_csv_rows(path), info.iter_rows()):
        unique.add(values, label, f"line {line}")
    return info


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("Parquet sets files need pyarrow, which is not installed here: "
                         "pip install pyarrow (or modelops-runtime[parquet]), or give the "
                         "sets as CSV") from None
    return pyarrow, pq


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    _, pq = _pyarrow()
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
        for values in batch.to_pylist():
            row += 1
            yield row, values


def _check_parquet(path: Path) -> SetsFile:
    pa, pq = _pyarrow()
    try:
        schema = pq.ParquetFile(path).schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"sets_file {path} is not a readable Parquet file: {exc}") from None
    columns = list(schema.names)
    params = _check_columns(path, columns)
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
              pa.types.is_string, pa.types.is_large_string)
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if not any(ok(t) for ok in scalar):
            raise ValueError(f"sets_file {path}: column {f.name} is of type {f.type}, not a "
                             f"scalar; every cell must be a scalar ({CELLS}): one value "
                             "per parameter and set")
    unique, rows = _Unique(f"sets_file {path}"), 0
    for row, values in _parquet_rows(path):
        for c, v in values.items():
            if v is None:
                raise ValueError(f"sets_file {path} row {row}: column {c} is empty (null); "
                                 "every set needs a value in every column")
        label = values.get(LABEL)
        unique.add({c: values[c] for c in params}, None if label is None else str(label),
                   f"row {row}")
        rows += 1
    if not rows:
        raise ValueError(f"sets_file {path} has no rows: give one row per set")
    return SetsFile(path=path, kind="parquet", columns=columns, params=params, rows=rows)
