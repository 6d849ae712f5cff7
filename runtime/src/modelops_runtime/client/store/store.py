"""A study's results store: finished runs written as they arrive, in Parquet parts of
bounded size, with a manifest of the study's inputs and of the parts that are complete;
resume runs only what the store lacks.

- covers: opening (creating, refusing other inputs, setting aside a damaged or unlisted
  part, checking it can be written); which (set, seed) runs are done, failed, missing;
  writing runs as parts; dropping failed rows before ``retry_failed``; reading it back.
- does not: submit runs (client/submit.py) or aggregate (client/stored.py); imports
  nothing of client/ (plans and outcomes are read by their attributes).
- see also: docs/studies.md "Results stores"; fs.py (atomic puts), parts.py (columns).

A part counts once the manifest lists it: a part is published whole (fs.put_atomic), then
the manifest is rewritten whole to list it. A crash between the two leaves a complete part
the manifest does not list: the next open sets it aside (renamed ``_unlisted-...``, which
pyarrow and pandas skip) and its runs run again, so no (set, seed) is ever listed twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .fs import (TMP_PREFIX, ResultsStoreError, StoreInputsDiffer, is_local,
                 manifest_exists, not_writable, open_fs, put_atomic)
from .manifest import (AGGREGATES, MANIFEST, PARTS, Manifest, PartEntry, StoreInputs,
                       inputs_difference)
from .parts import (KEY_COLUMNS, grow_columns, param_types, part_bytes, read_part, row_of,
                    schema)

PART_ROWS = 10_000      # runs per part, at most (and at most 1/20 of the study, >= 100)
FLUSH_SECONDS = 10.0    # a run waits at most this long (plus one run) before it is written
MISSING, OK, FAILED = 0, 1, 2


class ResultsStore:
    """One study's store at ``url``; open it with :meth:`open`."""

    def __init__(self, url: str, fs: Any, root: str, manifest: Manifest, *,
                 writable: bool, part_rows: int = PART_ROWS,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.url, self.fs, self.root, self.manifest = url, fs, root, manifest
        self.writable = writable
        self.part_rows, self.flush_seconds = part_rows, flush_seconds
        self.notes: list[str] = []        # what opening found and did (one line each)
        self._pos = {s.id: i for i, s in enumerate(manifest.inputs.sets)}
        n = manifest.inputs.seeds_count
        self._status = [bytearray(n) for _ in manifest.inputs.sets]
        self._part_failed: dict[str, int] = {}
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, plan=None, **kwargs) -> "ResultsStore":
        """Open the store for ``plan`` (created if absent; refused if it holds other
        inputs; checked writable), or, without a plan, for reading only."""
        url = str(url)
        fs, root = open_fs(url)
        path = f"{root}/{MANIFEST}"
        exists = manifest_exists(fs, root, url, MANIFEST)
        if not exists and plan is None:
            raise ResultsStoreError(f"{url} is not a results store (no {MANIFEST}); give the "
                                    "URL a study wrote with --results-store")
        if exists:
            try:
                manifest = Manifest.loads(fs.cat_file(path), url)
            except ValueError as exc:
                raise ResultsStoreError(f"results store {url}: {exc}") from None
            if plan is not None:
                mine = StoreInputs.of(plan)
                if mine.digest() != manifest.inputs_digest:
                    line = inputs_difference(manifest.inputs, mine, "the store", "this study") \
                        or "the inputs digest differs"
                    raise StoreInputsDiffer(
                        f"results store {url} holds runs of other inputs: {line}; nothing was "
                        "run. Give this study a new store, or rerun the study that wrote it")
        else:
            manifest = cls._create(fs, root, url, plan)
        if "part_rows" not in kwargs:
            kwargs["part_rows"] = max(100, min(PART_ROWS, manifest.inputs.runs // 20))
        store = cls(url, fs, root, manifest, writable=plan is not None, **kwargs)
        if plan is not None and exists:
            store._check_writable()
        store._scan()
        return store

    @staticmethod
    def _create(fs: Any, root: str, url: str, plan) -> Manifest:
        try:
            leftovers = [p for p in fs.ls(root, detail=False)] if fs.exists(root) else []
        except (OSError, ValueError):
            leftovers = []
        if leftovers:
            raise ResultsStoreError(
                f"{url} is not a results store (no {MANIFEST}) and is not empty; nothing was "
                "run. Give a new or empty location for the study's results")
        inputs = StoreInputs.of(plan)
        manifest = Manifest(study=plan.name, inputs_digest=inputs.digest(), inputs=inputs,
                            columns=param_types(s.params for s in inputs.sets))
        try:
            if is_local(fs):  # an object store has no directories (and makedirs would
                fs.makedirs(f"{root}/{PARTS}", exist_ok=True)  # create a missing bucket)
            put_atomic(fs, f"{root}/{MANIFEST}", manifest.dumps())
        except OSError as exc:
            raise not_writable(url, exc) from None
        return manifest

    def _check_writable(self) -> None:
        probe = f"{self.root}/{PARTS}/{TMP_PREFIX}probe"
        try:
            if is_local(self.fs):
                self.fs.makedirs(f"{self.root}/{PARTS}", exist_ok=True)
            put_atomic(self.fs, probe, b"")
            self.fs.rm_file(probe)
        except OSError as exc:
            raise not_writable(self.url, exc) from None

    def _part_path(self, name: str) -> str:
        return f"{self.root}/{PARTS}/{name}"

    def _scan(self) -> None:
        """Mark every listed part's runs; set aside what a crash left."""
        parts_dir = f"{self.root}/{PARTS}"
        try:
            found = {p["name"].rstrip("/").rsplit("/", 1)[-1]: p.get("size")
                     for p in self.fs.ls(parts_dir, detail=True)}
        except FileNotFoundError:
            found = {}
        listed = {p.name for p in self.manifest.parts}
        changed = False
        for name in sorted(found):
            if name.startswith(TMP_PREFIX) and self.writable:
                self.fs.rm_file(self._part_path(name))      # never data: a write cut short
            elif name.endswith(".parquet") and not name.startswith("_") and name not in listed:
                self._set_aside(name, "_unlisted-", "is complete but not in the manifest (the "
                                "study stopped between writing it and listing it)")
        keep = []
        for entry in self.manifest.parts:
            size = found.get(entry.name)
            problem = None
            if size is None:
                problem = "is missing"
            elif size != entry.bytes:
                problem = f"is truncated ({size} of {entry.bytes} bytes; a crash while copying?)"
            else:
                try:
                    keys = read_part(self.fs, self._part_path(entry.name), KEY_COLUMNS)
                except Exception as exc:  # noqa: BLE001 - any unreadable part is set aside
                    problem = f"cannot be read ({type(exc).__name__}: {exc})"
            if problem:
                changed = True
                if size is not None:
                    self._set_aside(entry.name, "_damaged-", problem, entry.rows)
                else:
                    self.notes.append(f"part {entry.name} {problem}: its {entry.rows} runs "
                                      "will run again")
                continue
            keep.append(entry)
            self._mark(keys, entry.name)
        if changed:
            self.manifest.parts = keep
            if self.writable:
                self._put_manifest()

    def _set_aside(self, name: str, prefix: str, problem: str, rows: int | None = None) -> None:
        runs = f"its {rows} runs" if rows is not None else "its runs"
        if not self.writable:
            self.notes.append(f"part {name} {problem}: not read")
            return
        self.fs.mv(self._part_path(name), self._part_path(prefix + name))
        self.notes.append(f"part {name} {problem}: set aside as {prefix}{name} (kept, not "
                          f"read); {runs} will run again")

    def _mark(self, keys, part: str) -> None:
        failed = 0
        for sid, seed, ok in zip(*(keys.column(c).to_pylist() for c in KEY_COLUMNS)):
            pos = self._pos.get(sid)
            if pos is None:
                continue
            self._status[pos][seed - self.manifest.inputs.seeds_first] = OK if ok else FAILED
            failed += not ok
        if failed:
            self._part_failed[part] = failed

    # -- what is done ----------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """(done ok, failed, missing) over the whole study."""
        ok = sum(s.count(OK) for s in self._status)
        failed = sum(s.count(FAILED) for s in self._status)
        return ok, failed, self.manifest.inputs.runs - ok - failed

    def set_counts(self, set_id: str) -> tuple[int, int, int]:
        s = self._status[self._pos[set_id]]
        ok, failed = s.count(OK), s.count(FAILED)
        return ok, failed, len(s) - ok - failed

    def todo(self, plan, retry_failed: bool = False) -> Iterator[tuple[Any, int]]:
        """The plan's runs the store lacks (and its failed ones, with ``retry_failed``)."""
        first = self.manifest.inputs.seeds_first
        for s in plan.iter_sets():
            status = self._status[self._pos[s.id]]
            for i, code in enumerate(status):
                if code == MISSING or (retry_failed and code == FAILED):
                    yield s, first + i

    def drop_failed(self) -> int:
        """Before ``retry_failed``: rewrite each part that holds failed runs without them
        (new part listed, then the old one removed), so no (set, seed) is listed twice."""
        import pyarrow.compute as pc

        dropped = 0
        for entry in list(self.manifest.parts):
            if not self._part_failed.get(entry.name):
                continue
            table = read_part(self.fs, self._part_path(entry.name))
            kept = table.filter(pc.equal(table["ok"], True))
            dropped += table.num_rows - kept.num_rows
            self.manifest.parts.remove(entry)
            if kept.num_rows:
                import io

                import pyarrow.parquet as pq

                buf = io.BytesIO()
                pq.write_table(kept, buf)
                self._publish(buf.getvalue(), kept.num_rows)
            else:
                self._put_manifest()
            self.fs.rm_file(self._part_path(entry.name))
            del self._part_failed[entry.name]
        if dropped and self.fs.exists(f"{self.root}/{AGGREGATES}"):
            self.fs.rm_file(f"{self.root}/{AGGREGATES}")   # they covered the failed runs
        for status in self._status:
            for i, code in enumerate(status):
                if code == FAILED:
                    status[i] = MISSING
        return dropped

    # -- writing ---------------------------------------------------------------------

    def add(self, outcome) -> None:
        """Keep one finished run; written with the next part (at ``part_rows`` runs, or
        ``flush_seconds`` after the last part)."""
        self._rows.append(row_of(self.manifest.study, outcome))
        self._status[self._pos[outcome.set.id]][outcome.seed - self.manifest.inputs.seeds_first] \
            = OK if outcome.ok else FAILED
        if (len(self._rows) >= self.part_rows
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the kept runs as one part and list it."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        grow_columns(self.manifest.columns, rows)
        failed = sum(not r["ok"] for r in rows)
        name = self._publish(part_bytes(rows, self.manifest.columns), len(rows))
        if failed:
            self._part_failed[name] = failed

    def _publish(self, data: bytes, rows: int) -> str:
        name = f"part-{self.manifest.next_part:06d}.parquet"
        try:
            put_atomic(self.fs, self._part_path(name), data)
            self.manifest.parts.append(PartEntry(name=name, rows=rows, bytes=len(data)))
            self.manifest.next_part += 1
            self._put_manifest()
        except OSError as exc:
            raise not_writable(self.url, exc) from None
        return name

    def _put_manifest(self) -> None:
        put_atomic(self.fs, f"{self.root}/{MANIFEST}", self.manifest.dumps())

    # -- reading ---------------------------------------------------------------------

    @property
    def part_paths(self) -> list[str]:
        return [self._part_path(p.name) for p in self.manifest.parts]

    def dataset(self):
        """Every listed part as one ``pyarrow.dataset.Dataset`` (one schema)."""
        import pyarrow.dataset as ds

        return ds.dataset(self.part_paths, filesystem=self.fs, format="parquet",
                          schema=schema(self.manifest.columns))

    def table(self, columns: list[str] | None = None):
        return self.dataset().to_table(columns=columns)

    def put_json(self, name: str, data: bytes) -> None:
        put_atomic(self.fs, f"{self.root}/{name}", data)

    def aggregates(self) -> dict[str, Any] | None:
        """What the last completed study stored in ``aggregates.json`` (None: nothing)."""
        import json

        path = f"{self.root}/{AGGREGATES}"
        if not self.fs.exists(path):
            return None
        return json.loads(self.fs.cat_file(path))
