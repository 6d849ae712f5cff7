"""The study file (``study.yaml``, format: runtime/examples/sir/README.md): what to run,
with which parameter sets and seeds. Read and checked here, before anything starts; the
sets expand lazily (sets.py) into the client's :class:`~..client.plan.StudyPlan`.

One set: ``params``. Many sets, one of: ``grid`` (name → list of values, every
combination), ``sets`` (a list of param dicts, each with an optional ``label``) or
``sets_file`` (CSV or Parquet, one row per set, an optional ``label`` column); ``params``
then holds the values every set shares. Seeds: ``seeds_per_set`` (or ``sims``) from
``first_seed``, the same seeds for every set.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from ...client.plan import Seeds, StudyPlan
from ...errors import LocalModeError
from ...models import SimTask, check_entrypoint
from ..results import SINGLE_SET, RunInputs
from .sets import (LABEL, FileSets, GridSets, ListSets, OneSet, check_label, check_name,
                   check_scalar, read_sets_file)

STUDY_FILE = "study.yaml"
DEFAULT_SIMS = 100
MANY = ("grid", "sets", "sets_file")


class Study(BaseModel):
    """A study file: seeded runs of one entrypoint over one or many parameter sets, then an
    aggregation per set (and optionally one across sets)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    bundle: Path                       # bundle directory, relative to the study file
    entrypoint: str                    # "module:function", called as function(params, seed)
    aggregate: str | None = None       # "module:function", called with one set's outputs
    aggregate_sets: str | None = None  # "module:function", called with every set's aggregate
    params: dict[str, Any] = Field(default_factory=dict)   # one set, or shared by every set
    grid: dict[str, list[Any]] | None = None
    sets: list[dict[str, Any]] | None = None
    sets_file: Path | None = None      # relative to the study file
    sims: int = Field(DEFAULT_SIMS, ge=1)             # seeds per set (the historic name)
    seeds_per_set: int | None = Field(None, ge=1)     # the same number, read into sims
    first_seed: int = 0

    _source: Any = PrivateAttr(None)   # the expanded sets, built once per study object

    @model_validator(mode="before")
    @classmethod
    def _seeds_per_set(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("seeds_per_set") is not None:
            if data.get("sims") is not None:
                raise ValueError("sims and seeds_per_set are both given: they are the same "
                                 "number (seeds each set runs); keep one")
            data = {**data, "sims": data["seeds_per_set"]}
        return data

    _entry = field_validator("entrypoint")(classmethod(lambda cls, v: check_entrypoint(v)))

    @field_validator("aggregate", "aggregate_sets")
    @classmethod
    def _agg(cls, v: str | None) -> str | None:
        return None if v is None else check_entrypoint(v)

    # -- reading ----------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> "Study":
        """Read ``path`` (a study file, or a directory holding ``study.yaml``) and check
        everything a run needs, sets file included: one clear error, nothing started."""
        path = Path(path)
        file = path / STUDY_FILE if path.is_dir() else path
        if not file.is_file():
            raise LocalModeError(
                f"no study at {path}: expected a study file or a directory with {STUDY_FILE} "
                "(see runtime/examples/sir for the format)")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise LocalModeError(f"study file {file} is not valid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise LocalModeError(f"study file {file} must hold a mapping of study fields")
        try:
            study = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'study'}: {e['msg']}"
                                 for e in exc.errors()[:3])
            raise LocalModeError(
                f"study file {file} is invalid: {problems}. Allowed fields: "
                f"{', '.join(cls.model_fields)} (see runtime/examples/sir/README.md)") from None
        try:
            study._check()
        except ValueError as exc:
            raise LocalModeError(f"study file {file}: {exc}") from None
        bundle = (file.parent / study.bundle).resolve()
        if not bundle.is_dir():
            raise LocalModeError(
                f"study file {file}: bundle directory {bundle} does not exist; `bundle:` is "
                "the model directory, relative to the study file")
        update: dict[str, Any] = {"bundle": bundle}
        if study.sets_file is not None:
            update["sets_file"] = (file.parent / study.sets_file).resolve()
        study = study.model_copy(update=update)
        try:
            study._source = study._make_source()
        except ValueError as exc:
            raise LocalModeError(f"study file {file}: {exc}") from None
        return study

    def _check(self) -> None:
        """Mixed or conflicting forms, non-scalar values, duplicates: ValueError."""
        given = [k for k in MANY if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are both given: a study's sets come from "
                             f"one of {', '.join(MANY)} (put values every set shares in params)")
        if self.aggregate_sets and not self.aggregate:
            raise ValueError("aggregate_sets is called with every set's aggregate, so it "
                             "needs aggregate (the per-set aggregation) too")
        for k, v in self.params.items():
            check_name(k, "params")
            check_scalar(v, f"params.{k}")
        if self.grid is not None:
            if not self.grid:
                raise ValueError("grid is empty: give at least one parameter with a list of "
                                 "values (e.g. grid: {beta: [0.2, 0.3]})")
            for k, values in self.grid.items():
                check_name(k, "grid")
                if not values:
                    raise ValueError(f"grid.{k} is an empty list: give at least one value "
                                     "(a grid runs every combination, so an empty list "
                                     "would run nothing)")
                seen: list[Any] = []
                for i, v in enumerate(values):
                    check_scalar(v, f"grid.{k}[{i}]")
                    if any(_same(v, s) for s in seen):
                        raise ValueError(f"grid.{k} lists {v!r} twice: every value once")
                    seen.append(v)
        if self.sets is not None and not self.sets:
            raise ValueError("sets is an empty list: give at least one parameter set")
        for i, s in enumerate(self.sets or ()):
            for k, v in s.items():
                if k == LABEL:
                    check_label(v, f"sets[{i}].{LABEL}")
                else:
                    check_name(k, f"sets[{i}]")
                    check_scalar(v, f"sets[{i}].{k}")
        for k in self._varied_names():
            if k in self.params:
                raise ValueError(f"{k} is in params and in {self._form}: give it in one "
                                 "(params holds what every set shares)")

    @property
    def _form(self) -> str:
        return next((k for k in MANY if getattr(self, k) is not None), "params")

    def _varied_names(self) -> set[str]:
        if self.grid is not None:
            return set(self.grid)
        return {k for s in self.sets or () for k in s if k != LABEL}

    def _make_source(self):
        base = dict(self.params)
        if self.grid is not None:
            return GridSets(self.grid, base)
        if self.sets is not None:
            return ListSets(self.sets, base)
        if self.sets_file is not None:
            info = read_sets_file(self.sets_file)
            clash = sorted(set(info.params) & set(base))
            if clash:
                raise ValueError(f"{clash[0]} is in params and in sets_file {self.sets_file}: "
                                 "give it in one (params holds what every set shares)")
            return FileSets(info, base)
        return OneSet(SINGLE_SET, base)

    # -- what runs --------------------------------------------------------------------

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "Study":
        copy = super().model_copy(update=update, deep=deep)
        copy._source = None    # other fields may give other sets
        return copy

    @property
    def source(self):
        """The parameter sets: sized, re-iterable, lazy (see sets.py)."""
        if self._source is None:   # built in code, or copied with other fields
            try:
                self._check()
                self._source = self._make_source()
            except ValueError as exc:
                raise LocalModeError(f"study {self.name}: {exc}") from None
        return self._source

    @property
    def set_count(self) -> int:
        return len(self.source)

    @property
    def seeds_each(self) -> int:
        return self.sims

    def seeds(self, sims: int | None = None) -> Seeds:
        return Seeds(first=self.first_seed, count=sims or self.seeds_each)

    def plan(self, bundle_ref: str, sims: int | None = None) -> StudyPlan:
        return StudyPlan(name=self.key_name, bundle=bundle_ref, entrypoint=self.entrypoint,
                         sets=self.source, seeds=self.seeds(sims), aggregate=self.aggregate,
                         aggregate_sets=self.aggregate_sets)

    def inputs(self, bundle_ref: str, sims: int | None = None) -> RunInputs:
        """What a run of this study computes (recorded in --results, checked by compare):
        every set's params (and label) by id, in order, and the seeds each runs."""
        seeds = list(self.seeds(sims))
        sets, labels = {}, {}
        for s in self.source:
            sets[s.id] = dict(s.params)
            if s.label is not None:
                labels[s.id] = s.label
        return RunInputs(bundle=bundle_ref, entrypoint=self.entrypoint,
                         aggregate=self.aggregate, sets=sets,
                         seeds={i: seeds for i in sets}, labels=labels)

    def tasks(self, bundle_ref: str, sims: int | None = None) -> list[SimTask]:
        """Every run as a SimTask (for small studies and tests; :meth:`plan` is lazy)."""
        plan = self.plan(bundle_ref, sims)
        return [plan.task(s, seed) for s, seed in plan.runs()]

    @property
    def key_name(self) -> str:
        """The study name as a Dask key part (letters, digits, '_' and '.')."""
        return re.sub(r"[^A-Za-z0-9_.]", "_", self.name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
