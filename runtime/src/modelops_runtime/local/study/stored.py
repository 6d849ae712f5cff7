"""``--results-store URL`` checked before a local cluster starts: its filesystem can be
opened, and a store that exists holds this study's inputs.

- covers: :func:`check_store`.
- does not: run the study into the store (run.py: run_study_stored), write or read parts
  (client/store/).
"""

from __future__ import annotations

from ...client.store.fs import ResultsStoreError, StoreInputsDiffer, manifest_exists, open_fs
from ...client.store.manifest import MANIFEST, Manifest, StoreInputs, inputs_difference
from .studyfile import Study


def check_store(url: str, study: Study, sims: int | None) -> None:
    """Before the cluster starts: the store's filesystem can be opened, and a store that
    exists holds this study's inputs (everything but the bundle digest, known once
    packed)."""
    fs, root = open_fs(url)
    path = f"{root}/{MANIFEST}"
    if not manifest_exists(fs, root, url, MANIFEST):
        return
    try:
        manifest = Manifest.loads(fs.cat_file(path), url)
    except ValueError as exc:
        raise ResultsStoreError(f"results store {url}: {exc}") from None
    except OSError as exc:
        raise ResultsStoreError(f"results store {url} cannot be read ({type(exc).__name__}: "
                                f"{exc})") from None
    planned = StoreInputs.of(study.plan(manifest.inputs.bundle, sims))
    line = inputs_difference(manifest.inputs, planned, "the store", "this study")
    if line:
        raise StoreInputsDiffer(f"results store {url} holds runs of other inputs: {line}; "
                                "nothing was run. Give this study a new store, or rerun the "
                                "study that wrote it")
