"""A study as the client submits it: parameter sets × seeds of one entrypoint.

A :class:`ParamSet` is one set of params with a stable id (a content hash of its params and
optional label: the same set always gets the same id, whatever order its keys came in).
:class:`Seeds` are the seeds every set runs. A :class:`StudyPlan` holds both and expands
into (set, seed) runs *lazily*: its ``sets`` may be any re-iterable sized collection (a
list, or a source that re-reads a file on each pass), so a 100,000-run study is never one
list of tasks in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..models import Scalar, SimTask, check_bundle_ref, check_entrypoint

SET_ID_CHARS = 12          # hex characters of a set id (48 bits)
_KEY_PART = re.compile(r"^[A-Za-z0-9_.]+$")


def canonical_params(params: Mapping[str, Any]) -> str:
    """The params as the set id hashes them: JSON with sorted keys, no whitespace (so the
    order keys or columns came in never changes the id)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


def set_id(params: Mapping[str, Any], label: str | None = None) -> str:
    """Stable id of a parameter set: sha256 of its canonical params (and label, if any)."""
    blob = json.dumps({"label": label, "params": json.loads(canonical_params(params))},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:SET_ID_CHARS]


class ParamSet(BaseModel):
    """One parameter set of a study: its params, optional label, stable id and position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    params: dict[str, Scalar]
    label: str | None = None
    index: int = 0               # position in the study (0-based), for reports

    @classmethod
    def of(cls, params: Mapping[str, Scalar], label: str | None = None,
           index: int = 0) -> "ParamSet":
        return cls(id=set_id(params, label), params=dict(params), label=label, index=index)

    @property
    def name(self) -> str:
        """What reports show: the label, else the id."""
        return self.label if self.label is not None else self.id


class Seeds(BaseModel):
    """The seeds every set runs: ``first .. first + count - 1`` (the same for every set, so
    differences between sets come from their params, not from their random numbers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first: int = 0
    count: int = Field(ge=1)

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        return iter(range(self.first, self.first + self.count))

    def __len__(self) -> int:
        return self.count

    @property
    def last(self) -> int:
        return self.first + self.count - 1


class StudyPlan(BaseModel):
    """What :func:`~modelops_runtime.client.submit_study` runs: every set × every seed of
    ``entrypoint``, then ``aggregate`` once per set over that set's successful runs, then
    ``aggregate_sets`` once over every set's aggregate (optional).

    ``sets`` is any sized, re-iterable collection of :class:`ParamSet` (a list, or a lazy
    source); it is iterated once per pass, never copied into a list."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = "study"
    bundle: str
    entrypoint: str
    sets: Any
    seeds: Seeds
    aggregate: str | None = None
    aggregate_sets: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _KEY_PART.match(v):
            raise ValueError(f"study name {v!r} may only hold letters, digits, '_' and '.' "
                             "(it is part of every Dask key)")
        return v

    @field_validator("bundle")
    @classmethod
    def _bundle(cls, v: str) -> str:
        return check_bundle_ref(v)

    @field_validator("entrypoint")
    @classmethod
    def _entry(cls, v: str) -> str:
        return check_entrypoint(v)

    @field_validator("aggregate", "aggregate_sets")
    @classmethod
    def _agg(cls, v: str | None) -> str | None:
        return None if v is None else check_entrypoint(v)

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: Any) -> Any:
        if not (hasattr(v, "__iter__") and hasattr(v, "__len__")) or isinstance(v, (str, dict)):
            raise ValueError("sets must be a sized, re-iterable collection of ParamSet "
                             "(e.g. a list of ParamSet.of(params))")
        if len(v) < 1:
            raise ValueError("a study needs at least one parameter set")
        return v

    @property
    def set_count(self) -> int:
        return len(self.sets)

    @property
    def run_count(self) -> int:
        return self.set_count * self.seeds.count

    @property
    def code(self) -> str:
        """Short digest of what the runs execute (bundle and entrypoint), part of every key:
        the same set and seed of another bundle is another task."""
        return hashlib.sha256(f"{self.bundle}\0{self.entrypoint}".encode()).hexdigest()[:8]

    def iter_sets(self) -> Iterator[ParamSet]:
        """The sets in order, each checked; a set id seen twice is refused (it would be the
        same Dask key: two runs that are one)."""
        seen: set[str] = set()
        for s in self.sets:
            if not isinstance(s, ParamSet):
                raise TypeError(f"sets must hold ParamSet objects, got {type(s).__name__}; "
                                "build them with ParamSet.of(params, label)")
            if s.id in seen:
                raise ValueError(f"parameter set {s.name} ({canonical_params(s.params)}) is "
                                 "in the study twice; remove one, or give them different labels")
            seen.add(s.id)
            yield s

    def runs(self) -> Iterator[tuple[ParamSet, int]]:
        """Every (set, seed), set by set, lazily."""
        for s in self.iter_sets():
            for seed in self.seeds:
                yield s, seed

    def task(self, s: ParamSet, seed: int) -> SimTask:
        return SimTask(bundle=self.bundle, entrypoint=self.entrypoint, params=dict(s.params),
                       seed=seed)


def run_key(study: str, set_id_: str, seed: int, code: str) -> str:
    """The Dask key of one run: stable and unique per (study, set, seed) and what runs."""
    return f"modelops-run-{study}-{set_id_}-{seed}-{code}"


def plan_of(name: str, bundle: str, entrypoint: str,
            sets: Iterable[Mapping[str, Scalar] | ParamSet], seeds: Seeds | int,
            **kwargs) -> StudyPlan:
    """Convenience: a plan from plain param dicts (or ParamSets) and a seed count (seeds
    ``0 .. seeds - 1``) or :class:`Seeds`."""
    items = [s if isinstance(s, ParamSet) else ParamSet.of(s, index=i)
             for i, s in enumerate(sets)]
    if isinstance(seeds, int):
        seeds = Seeds(count=seeds)
    elif not isinstance(seeds, Seeds):
        raise TypeError("seeds: give Seeds(first=..., count=...) or a number of seeds")
    return StudyPlan(name=name, bundle=bundle, entrypoint=entrypoint, sets=items, seeds=seeds,
                     **kwargs)
