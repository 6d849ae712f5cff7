"""A venv generation is never removed while a task may still start in it (issue #24, item
6): the lease on a new generation is taken before it appears under its name, so a
collection running at that moment (another worker process of the pod, or another thread
finishing a build) never sees it unused.

The race, repeated: one thread publishes new generations of one dependency set over and
over (the published link removed each time, as a superseded generation's is), while two
others collect the cache in a tight loop. Every generation handed out must be there, with
its interpreter, until its lease is closed.
"""

from __future__ import annotations

import contextlib
import os
import threading

from modelops_runtime.worker.warm.venvs.store import VenvCache, venv_key

ROUNDS = 40


def test_a_new_generation_is_leased_before_a_collection_can_see_it(tmp_path):
    cache = VenvCache(tmp_path / "venvs", validate=False)
    key = venv_key([])
    stop = threading.Event()
    errors: list[BaseException] = []

    def collect_forever() -> None:
        other = VenvCache(tmp_path / "venvs", validate=False)  # as another worker process
        try:
            while not stop.is_set():
                other.collect()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    collectors = [threading.Thread(target=collect_forever, daemon=True) for _ in range(2)]
    for thread in collectors:
        thread.start()
    lost = []
    try:
        for round_ in range(ROUNDS):
            venv = cache.get([])
            try:
                if venv.lease is None or not venv.python.exists():
                    lost.append((round_, venv.path.name, venv.lease))
            finally:
                if venv.lease is not None:
                    os.close(venv.lease)
            with contextlib.suppress(FileNotFoundError):  # a collection may have taken it
                os.unlink(cache.root / key)  # superseded: the next get builds a new one
    finally:
        stop.set()
        for thread in collectors:
            thread.join(60)
    assert not errors, errors
    assert not lost, (f"{len(lost)} of {ROUNDS} generations were removed before their "
                      f"first user could start a process in them: {lost[:5]}")
