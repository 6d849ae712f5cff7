"""Shared pieces of the benchmarks: the no-op bundle, executors built like a worker builds
them, and side-by-side timing.

Side by side means interleaved: every round runs each case once in turn, so a burst of
load from elsewhere on the machine hits all cases alike and the ratios stay meaningful
even when absolute times do not.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelops_runtime.bundles import BundleStore, pack
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.models import Call
from modelops_runtime.worker.executors import make_executor

from shared import write_bundle

# The bundle every overhead benchmark runs. ``noop`` is the entrypoint measured;
# ``modules`` tells the memory benchmark what a warm process has imported.
NOOP_MODEL = '''
import sys


def noop(params, seed):
    return {}


def modules(params, seed):
    return {"modules": sorted(sys.modules), "path": list(sys.path)}
'''


def noop_call(bundle: str, seed: int = 0) -> Call:
    return Call(bundle=bundle, entrypoint="model:noop", args=({}, seed))


def noop_function(params, seed):
    """The same no-op as the bundle's, importable from here (ProcessPoolExecutor pickles
    functions by reference)."""
    return {}


@dataclass
class Workspace:
    """Everything a benchmark writes lives under ``root`` (removed by run.py)."""

    root: Path
    repo: Path = field(init=False)

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"

    def bundle(self, name: str, files: Mapping[str, str]) -> tuple[str, Path]:
        """Pack a bundle; return (reference, source directory)."""
        src = write_bundle(self.root / "src" / name, files)
        return pack(src, str(self.repo)), src

    def config(self, **settings: object) -> RuntimeConfig:
        """A RuntimeConfig as a worker reads it from MODELOPS_* (caches in the workspace)."""
        env = {"MODELOPS_BUNDLE_REPO": str(self.repo),
               "MODELOPS_BUNDLE_CACHE_DIR": str(self.root / "bundles"),
               "MODELOPS_VENVS_DIR": str(self.root / "venvs")}
        env.update({f"MODELOPS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in settings.items()})
        return RuntimeConfig.from_env(env)

    def executor(self, **settings: object):
        """The executor a Dask worker process with these settings would build."""
        config = self.config(**settings)
        return make_executor(config, BundleStore(config))


@dataclass
class Samples:
    """Per-operation wall times of one case, in seconds."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def side_by_side(cases: Mapping[str, Callable[[], object]], *, rounds: int,
                 per_round: Mapping[str, int] | int, warmup: int = 1) -> dict[str, Samples]:
    """Time every case ``per_round`` times per round, cases interleaved round by round.

    Each case is first called ``warmup`` times untimed (imports, first-use caches)."""
    counts = per_round if isinstance(per_round, Mapping) else dict.fromkeys(cases, per_round)
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    out = {name: Samples() for name in cases}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, fn in cases.items():
            times = out[name].times
            for _ in range(counts[name]):
                t0 = clock()
                fn()
                times.append(clock() - t0)
    return out


def ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e3:.3f} ms"


def mb(n: float) -> str:
    """Bytes in MB (10^6), the unit the memory target is set in."""
    return f"{n / 1e6:.1f} MB"


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block (uv reads its settings from
    the worker's environment, so a benchmark sets them there), then restore it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
