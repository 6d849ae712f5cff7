"""Results stores through the client API (submit_study(store=...)) on a real `dask
scheduler` and `dask worker --preload modelops_runtime.preload` (executor direct): runs
written as Parquet parts with a manifest, resume runs only what is missing, aggregates
from the store equal in one go and in several, failed runs kept and rerun only when
asked, other inputs refused, a damaged part set aside, the store read as one dataset by
pyarrow and pandas; local directories and memory://."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid

import pytest

from modelops_runtime.client import ParamSet, Seeds, StudyPlan, gather_study, submit_study
from modelops_runtime.client.store import ResultsStore, ResultsStoreError, StoreInputsDiffer
from modelops_runtime.client.stored import StoredStudyResult
from support.bundles import make_bundle

MODEL = '''
def simulate(params, seed):
    if seed == params.get("fail_seed"):
        raise RuntimeError(f"seed {seed} fails on purpose")
    return {"value": params["x"] * seed + params.get("y", 0), "seed": seed, "n": [seed, 1]}

def total(outputs):
    return {"total": sum(o["value"] for o in outputs), "n": len(outputs),
            "seeds": [o["seed"] for o in outputs]}

def best(sets):
    top = max(sets, key=lambda s: s["aggregate"]["total"])
    return {"best": top["set_id"], "sets": len(sets),
            "runs": sum(s["runs"] for s in sets), "failed": sum(s["failed"] for s in sets)}
'''
SEEDS = 25


def _plan(ref, *, fail=True, x2=2.0, seeds=SEEDS):
    sets = [ParamSet.of({"x": 1.0, "y": 0}, "one", index=0),
            ParamSet.of({"x": x2, "y": 5, **({"fail_seed": 3} if fail else {})}, "two",
                        index=1),
            ParamSet.of({"x": 0.5, "y": 1}, index=2)]
    return StudyPlan(name="stored", bundle=ref, entrypoint="model:simulate", sets=sets,
                     seeds=Seeds(first=0, count=seeds), aggregate="model:total",
                     aggregate_sets="model:best")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One real cluster for the module (2 worker processes, executor direct): every test
    gives its study a store of its own, and stored sessions use keys of their own."""
    import contextlib

    from support.cluster import ProcessCluster, base_env

    root = tmp_path_factory.mktemp("store-cluster")
    repo = root / "repo"
    ref = make_bundle(root, repo, {"model.py": MODEL, "requirements.txt": ""})
    (root / "cluster").mkdir()
    cluster = ProcessCluster(root=root / "cluster", env=base_env(root / "cluster", {
        "MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLE_REPO": str(repo)}))
    client = None
    try:
        cluster.start_scheduler()
        cluster.start_worker(nworkers=2, nthreads=1)
        client = cluster.client()
        cluster.wait_for_workers(client, 2)
        yield client, ref
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        cluster.stop()


def _rows(store: ResultsStore):
    table = store.table().sort_by([("set_index", "ascending"), ("seed", "ascending")])
    drop = {"pid", "process_task_count", "duration_s", "worker", "executor", "venv_cache_hit"}
    return [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]


def _aggs(result: StoredStudyResult):
    return ([(s.set_id, s.ok, s.failed, s.aggregate.outputs if s.aggregate else None)
             for s in result.sets], result.across.outputs if result.across else None)


def _in_pieces(client, plan, url, pieces):
    """Run the study stopping after each of ``pieces`` runs (a `break`: the client goes
    away mid-study), then to the end."""
    for n in pieces:
        sub = submit_study(client, plan, store=url, window=8, batch=2)
        for _ in itertools.islice(sub, n):
            pass
        del sub
    return gather_study(client, submit_study(client, plan, store=url, window=8, batch=2),
                        progress=False)


@pytest.mark.parametrize("where", ["dir", "memory"])
def test_a_study_in_pieces_equals_one_in_one_go(setup, tmp_path, where):
    client, ref = setup
    plan = _plan(ref)
    if where == "dir":
        one, five = str(tmp_path / "one"), str(tmp_path / "five")
    else:
        tag = uuid.uuid4().hex
        one, five = f"memory://one-{tag}", f"memory://five-{tag}"
    whole = gather_study(client, submit_study(client, plan, store=one), progress=False)
    assert whole.complete and whole.ran == 75 and whole.failed == 1 and whole.resumed == 0
    pieces = _in_pieces(client, plan, five, [10, 17, 9, 20])
    assert pieces.complete and pieces.resumed > 0 and pieces.ran < 75
    a, b = ResultsStore.open(one), ResultsStore.open(five)
    assert len(b.manifest.parts) > 1, "runs were not written as they arrived"
    rows_a, rows_b = _rows(a), _rows(b)
    assert rows_a == rows_b, "the store of a study run in pieces differs from one in one go"
    keys = [(r["set_id"], r["seed"]) for r in rows_b]
    assert len(keys) == len(set(keys)) == 75, "a (set, seed) twice, or one missing"
    assert _aggs(whole) == _aggs(pieces)
    assert a.aggregates()["sets"] == b.aggregates()["sets"] or \
        [v["aggregate"]["outputs"] for v in a.aggregates()["sets"].values()] == \
        [v["aggregate"]["outputs"] for v in b.aggregates()["sets"].values()]
    # the plain loop's per-set totals: aggregates come from the store's exact outputs
    two = next(s for s in whole.sets if s.label == "two")
    assert two.aggregate.outputs["n"] == SEEDS - 1 and 3 not in two.aggregate.outputs["seeds"]
    # a complete study reruns nothing
    again = gather_study(client, submit_study(client, plan, store=five), progress=False)
    assert again.ran == 0 and _aggs(again) == _aggs(whole)


def test_failed_runs_are_kept_and_rerun_only_when_asked(setup, tmp_path):
    client, ref = setup
    url = str(tmp_path / "store")
    plan = _plan(ref)
    first = gather_study(client, submit_study(client, plan, store=url), progress=False)
    failed = [r for r in _rows(ResultsStore.open(url)) if not r["ok"]]
    assert [(r["set_label"], r["seed"], r["error_type"]) for r in failed] == \
        [("two", 3, "SimulationError")]
    assert "fails on purpose" in failed[0]["error_message"]
    again = gather_study(client, submit_study(client, plan, store=url), progress=False)
    assert again.ran == 0 and again.failed == 1
    retried = gather_study(client, submit_study(client, plan, store=url, retry_failed=True),
                           progress=False)
    assert retried.ran == 1 and retried.failed == 1          # it fails again, typed again
    keys = [(r["set_id"], r["seed"]) for r in _rows(ResultsStore.open(url))]
    assert len(keys) == len(set(keys)) == 75
    assert _aggs(first) == _aggs(retried)


def test_other_inputs_are_refused_naming_what_changed(setup, tmp_path):
    client, ref = setup
    url = str(tmp_path / "store")
    gather_study(client, submit_study(client, _plan(ref, seeds=4), store=url), progress=False)
    before = sorted(os.listdir(tmp_path / "store" / "parts"))
    manifest = (tmp_path / "store" / "manifest.json").read_bytes()
    with pytest.raises(StoreInputsDiffer) as err:
        submit_study(client, _plan(ref, x2=2.5, seeds=4), store=url)
    assert "param 'x' of set 2 of 3 ('two') differs: 2.0 in the store, 2.5 in this study" \
        in str(err.value)
    with pytest.raises(StoreInputsDiffer, match=r"the seeds differ: 0\.\.3 in the store, "
                                                r"0\.\.4 in this study"):
        submit_study(client, _plan(ref, seeds=5), store=url)
    assert sorted(os.listdir(tmp_path / "store" / "parts")) == before
    assert (tmp_path / "store" / "manifest.json").read_bytes() == manifest


def test_a_truncated_part_is_set_aside_and_its_runs_run_again(setup, tmp_path):
    client, ref = setup
    url = str(tmp_path / "store")
    plan = _plan(ref, fail=False, seeds=10)
    _in_pieces(client, plan, url, [12])
    whole = ResultsStore.open(url)
    first = whole.manifest.parts[0].name
    path = tmp_path / "store" / "parts" / first
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])      # what a crash while copying leaves
    store = ResultsStore.open(url, plan)
    assert store.notes == [f"part {first} is truncated ({len(data) // 2} of {len(data)} "
                           f"bytes; a crash while copying?): set aside as _damaged-{first} "
                           f"(kept, not read); its {whole.manifest.parts[0].rows} runs will "
                           "run again"]
    assert (tmp_path / "store" / "parts" / f"_damaged-{first}").read_bytes() == data[: len(data) // 2]
    result = gather_study(client, submit_study(client, plan, store=store), progress=False)
    assert result.complete and result.ran == whole.manifest.parts[0].rows
    keys = [(r["set_id"], r["seed"]) for r in _rows(ResultsStore.open(url))]
    assert len(keys) == len(set(keys)) == 30


def test_the_store_opens_as_one_dataset_with_pyarrow_and_pandas(setup, tmp_path):
    import pandas as pd
    import pyarrow.dataset as ds

    client, ref = setup
    url = tmp_path / "store"
    _in_pieces(client, _plan(ref), str(url), [20, 20])
    # the documented ways (docs/studies.md, "Results stores")
    frame = pd.read_parquet(url / "parts")
    table = ds.dataset(url / "parts", format="parquet").to_table()
    assert len(frame) == table.num_rows == 75
    assert sorted(zip(frame.set_id, frame.seed)) == sorted(zip(table["set_id"].to_pylist(),
                                                               table["seed"].to_pylist()))
    assert {"param.x", "param.y", "output.value", "output.seed", "output.n", "outputs",
            "env_digest", "error_type", "ok"} <= set(frame.columns)
    ok = frame[frame.ok]
    assert all(json.loads(o)["value"] == v for o, v in zip(ok.outputs, ok["output.value"]))


def test_bad_stores_are_one_clear_line_and_change_nothing(setup, tmp_path):
    client, ref = setup
    plan = _plan(ref, seeds=3)
    with pytest.raises(ResultsStoreError, match=r"^results store gs://bucket/study: the gs:// "
                                                r"filesystem needs a package that is not "
                                                r"installed here \(.*gcsfs"):
        submit_study(client, plan, store="gs://bucket/study")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(ResultsStoreError, match="is not a results store .* and is not empty"):
        submit_study(client, plan, store=str(tmp_path / "notes"))
    assert os.listdir(tmp_path / "notes") == ["mine.txt"]


def test_a_read_only_store_is_refused_before_anything_runs(setup, tmp_path):
    """The store's folders made immutable (chattr +i: root, who runs the tests, writes
    through chmod): opening it for a study is one line, and nothing in it changes."""
    import shutil

    client, ref = setup
    url = tmp_path / "store"
    plan = _plan(ref, seeds=3)
    gather_study(client, submit_study(client, plan, store=str(url)), progress=False)
    before = {p: p.read_bytes() for p in url.rglob("*") if p.is_file()}
    if not shutil.which("chattr"):
        pytest.skip("chattr (e2fsprogs) is not installed: cannot make a folder read-only "
                    "for root")
    folders = [url, url / "parts"]
    made = subprocess.run(["chattr", "+i", *map(str, folders)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"chattr +i is refused here ({made.stderr.strip()}): cannot make a "
                    "folder read-only for root")
    try:
        with pytest.raises(ResultsStoreError) as err:
            submit_study(client, plan, store=str(url))
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=True)
    line = str(err.value)
    assert line.startswith(f"results store {url} is not writable (PermissionError"), line
    assert "nothing was run and nothing in it was changed" in line and "\n" not in line
    assert {p: p.read_bytes() for p in url.rglob("*") if p.is_file()} == before


def test_a_part_the_manifest_does_not_list_is_set_aside(setup, tmp_path):
    """A crash between publishing a part and listing it leaves a complete part the
    manifest does not list: set aside (kept, skipped by pandas), its runs run again, so no
    (set, seed) is counted twice."""
    import pandas as pd

    client, ref = setup
    url = tmp_path / "store"
    plan = _plan(ref, fail=False, seeds=10)
    gather_study(client, submit_study(client, plan, store=str(url)), progress=False)
    parts = url / "parts"
    first = sorted(parts.iterdir())[0]
    stray = parts / "part-999999.parquet"
    stray.write_bytes(first.read_bytes())
    store = ResultsStore.open(str(url), plan)
    assert store.notes == ["part part-999999.parquet is complete but not in the manifest (the "
                           "study stopped between writing it and listing it): set aside as "
                           "_unlisted-part-999999.parquet (kept, not read); its runs will run "
                           "again"]
    assert not stray.exists() and (parts / "_unlisted-part-999999.parquet").exists()
    assert store.counts() == (30, 0, 0)
    assert len(pd.read_parquet(parts)) == 30
