"""A results store's manifest: the study's inputs (and their digest), the parts that are
complete, the column types every part is written with.

- covers: the inputs of a :class:`~..plan.StudyPlan` (bundle, entrypoint, sets, seeds,
  aggregation) and their digest; one line naming what differs between two inputs; the
  manifest document (``manifest.json``) read and written whole.
- does not: write parts (parts.py) or decide what a study runs (store.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


MANIFEST = "manifest.json"
AGGREGATES = "aggregates.json"
PARTS = "parts"
STORE_FORMAT = 1
KIND = "modelops-results-store"


class SetInputs(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    params: dict[str, Any]
    label: str | None = None


class StoreInputs(BaseModel):
    """What a study computes: a store holds runs of exactly one of these."""

    model_config = ConfigDict(frozen=True)

    bundle: str
    entrypoint: str
    aggregate: str | None = None
    aggregate_sets: str | None = None
    seeds_first: int
    seeds_count: int
    sets: list[SetInputs]

    @classmethod
    def of(cls, plan) -> "StoreInputs":
        """The inputs of a client StudyPlan."""
        return cls(bundle=plan.bundle, entrypoint=plan.entrypoint, aggregate=plan.aggregate,
                   aggregate_sets=plan.aggregate_sets, seeds_first=plan.seeds.first,
                   seeds_count=plan.seeds.count,
                   sets=[SetInputs(id=s.id, params=dict(s.params), label=s.label)
                         for s in plan.iter_sets()])

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()

    @property
    def runs(self) -> int:
        return len(self.sets) * self.seeds_count


class PartEntry(BaseModel):
    name: str          # file name under parts/
    rows: int
    bytes: int


class Manifest(BaseModel):
    """``manifest.json``: rewritten whole (atomically) each time a part is complete."""

    format: int = STORE_FORMAT
    kind: str = KIND
    study: str
    inputs_digest: str
    inputs: StoreInputs
    columns: dict[str, str] = Field(default_factory=dict)   # param./output. column → type
    parts: list[PartEntry] = Field(default_factory=list)
    next_part: int = 1

    def dumps(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1).encode()

    @classmethod
    def loads(cls, data: bytes, url: str) -> "Manifest":
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"{MANIFEST} is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            raise ValueError(f"{MANIFEST} is not a modelops results store manifest")
        if not isinstance(doc.get("format"), int) or doc["format"] > STORE_FORMAT:
            raise ValueError(f"store format {doc.get('format')} is newer than this "
                             f"modelops-runtime reads ({STORE_FORMAT}): upgrade it")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{MANIFEST}: {'.'.join(map(str, first['loc']))}: "
                             f"{first['msg']}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _span(first: int, count: int) -> str:
    return f"{first}..{first + count - 1}"


def inputs_difference(a: StoreInputs, b: StoreInputs, a_label: str, b_label: str) -> str | None:
    """One line naming the first thing that differs (in the words ``compare`` uses), or
    None if the inputs are the same."""
    if a.bundle != b.bundle:
        return (f"the bundle differs: {a.bundle[:19]}… in {a_label}, {b.bundle[:19]}… in "
                f"{b_label} (the model's code or dependencies changed)")
    for what, va, vb in (("entrypoint", a.entrypoint, b.entrypoint),
                         ("aggregation", a.aggregate, b.aggregate),
                         ("aggregation across sets", a.aggregate_sets, b.aggregate_sets)):
        if va != vb:
            return f"the {what} differs: {va} in {a_label}, {vb} in {b_label}"
    if (a.seeds_first, a.seeds_count) != (b.seeds_first, b.seeds_count):
        return (f"the seeds differ: {_span(a.seeds_first, a.seeds_count)} in {a_label}, "
                f"{_span(b.seeds_first, b.seeds_count)} in {b_label}")
    total = len(a.sets)
    for i, (sa, sb) in enumerate(zip(a.sets, b.sets)):
        if sa == sb:
            continue
        where = f"set {i + 1} of {total}" + (f" ({sa.label!r})" if sa.label else "")
        for name in sorted(set(sa.params) | set(sb.params)):
            va, vb = sa.params.get(name, _MISSING), sb.params.get(name, _MISSING)
            if va != vb or type(va) is not type(vb):
                show_a = "(not set)" if va is _MISSING else _short(va)
                show_b = "(not set)" if vb is _MISSING else _short(vb)
                return (f"param {name!r} of {where} differs: {show_a} in {a_label}, {show_b} "
                        f"in {b_label}")
        return f"the label of set {i + 1} of {total} differs: {sa.label!r} in {a_label}, " \
               f"{sb.label!r} in {b_label}"
    if len(a.sets) != len(b.sets):
        return (f"the study has {len(a.sets)} parameter sets in {a_label} and {len(b.sets)} "
                f"in {b_label}")
    return None


_MISSING = object()
