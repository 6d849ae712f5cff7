"""What ``diagnose`` tells a modeller: each layer as one sentence about what the model
does, and the next step as a command to paste.

- covers: the verdict sentences, the next command per layer.
- does not: decide the layer (verdict.py) or print (report.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Protocol

from .steps import StepRun


class Replay(Protocol):
    def __call__(self, *extra: str, sims: int | None = None, command: str = "local") -> str:
        ...


def placeholder(*extra: str, sims: int | None = None, command: str = "local") -> str:
    """A command on placeholder inputs (when the verdict is read without a Context)."""
    args = ["modelops-runtime", command, "-f", "my-values.yaml"]
    for s in extra:
        args += ["--set", s]
    args += ["--study", "my-study"] + (["--sims", str(sims)] if sims else [])
    return shlex.join(args)


NOT_THREADS = ("the runtime never runs two tasks in one Python process at once (direct "
               "serialises a worker process's tasks, isolated_warm gives each Dask thread "
               "its own warm process), so Dask's --nthreads cannot trigger a thread-unsafe "
               "module-level object: only native threads can, and they were varied")

NONDETERMINISTIC = ("your model gives other results for the same seed even when each run is "
                    "alone in its process: something in it ignores the seed (an unseeded "
                    "random generator, the time, os.urandom, the order of a set, a file it "
                    "reads at a fixed path that runs also write, an external service)")
CONCURRENCY = ("your model's runs disturb each other when several run at the same time in "
               "different processes, while one at a time they give the same results every "
               "time: they share something outside their own run, such as a file at a fixed "
               "path in the temp directory or an external service")
DIRECT_CONCURRENCY = ("your model's runs disturb each other when several run at the same "
                      "time in the worker's own processes (executor=direct), while one at a "
                      "time they give the right results: they share something there, such as "
                      "a file at a fixed path in the temp directory, which all of a host's "
                      "worker processes share (each warm process has its own)")
MODULE_STATE = ("your model keeps something between runs in one process: the runs that differ "
                "are exactly those that were not their process's first, and importing your "
                "code afresh for each run removes it (a module-level variable: a list, a "
                "cache, a counter, or a random generator seeded when the module is imported)")
PROCESS_STATE = ("your model keeps something between runs in one process, even when your code "
                 "is imported afresh for each run: the runs that differ are exactly those that "
                 "were not their process's first, and the state lives outside your modules (a "
                 "library's global random generator, an attribute set on an imported library, "
                 "builtins, the environment, a thread, or a C library's state: libc's rand(), "
                 "the floating-point rounding mode)")
WARM_STATE = ("your model keeps something between runs in one process: the runs that differ "
              "are exactly those that were not their process's first")
WARM_PROCESS = ("your model gives other results in your mode than in a new process per run, "
                "also for runs that were their process's first: the warm process changes "
                "them, not only through what earlier runs left behind")
TEMPLATE_FORK = ("your model gives other results in a process forked from a template than in "
                 "a new interpreter (it does something when it is imported that a fork does "
                 "not repeat, e.g. seeds a random generator): run it with "
                 "worker.executor.freshProcessFrom: exec")
OUTSIDE_STATE = ("your model's results change from one run of the study to the next, whatever "
                 "the mode: a run reads something that an earlier run left outside its own "
                 "process (a file at a fixed path, e.g. in /tmp or your home directory, written "
                 "by the model or by an atexit handler, a database, an external service)")
CACHED_VENV = ("your bundle's cached venv gives other results than one freshly built from "
               "the same requirements: the cached one is stale or was modified after its "
               "build, or the requirements resolve differently today")
DIRECT_PROCESS = ("your model gives other results in the worker's own process than in its "
                  "own venv, with the same versions of its requirements: it depends on "
                  "something else of the worker (environment variables, the working "
                  "directory, files next to it, other installed packages)")


def direct_fails(first_failure: str, user_direct: bool = False) -> str:
    """``first_failure``: "seed N: Type: message" of the direct step's first failure."""
    error = first_failure.split(": ", 1)[-1] if first_failure else ""
    error = error.split(" raised ", 1)[-1]      # the model's own exception, not the wrapper
    return ("your model fails in the worker's own process (executor=direct) but runs in its "
            "own venv, with the same versions of its requirements"
            + (f" ({error})" if error else "")
            + ": it needs something a Dask worker process does not give it (a worker process "
            "is a daemon, which may not start a multiprocessing pool; its environment "
            "variables, working directory, files)"
            + ("" if user_direct else "; your mode runs the model in its own process and is "
               "not affected by this"))


def validate_deps(on: bool, versions_differ: bool) -> str:
    """What worker.executor.validateDeps does about a cached venv at fault."""
    if not on:
        return ("set worker.executor.validateDeps: true (it rebuilds a cached venv whose "
                "installed packages or files changed)")
    if versions_differ:
        return ("worker.executor.validateDeps is on in your mode: it rebuilds a cached venv "
                "whose installed packages changed since its build, not one whose requirements "
                "resolve to other versions today than then (pin them)")
    return ("worker.executor.validateDeps is on in your mode and did not catch it: it checks "
            "every file of a cached venv when a worker process first uses it, so a change "
            "made while a worker process runs passes until the next one starts; delete the "
            "cached venv (under the worker's venv cache directory) so it is rebuilt from the "
            "requirements")


def worker_env(versions: Sequence[str]) -> str:
    return ("your model gives other results with the worker's own packages than in its own "
            "venv, because the versions of its requirements differ there ("
            + "; ".join(versions[:3]) + (" ..." if len(versions) > 3 else "") + ")")


def native_threads(n: str) -> str:
    return (f"your model's results depend on how many threads numerical libraries use "
            f"(BLAS/OpenMP/NumExpr/Numba): with {n} thread(s) they change, as floating-point "
            f"sums do when split differently")


def _results(runs: Sequence[StepRun], name: str) -> str | None:
    return next((str(r.results) for r in runs if r.ran and r.step.name == name
                 and r.results), None)


def _compare(runs: Sequence[StepRun], a: str, b: str) -> str | None:
    fa, fb = _results(runs, a), _results(runs, b)
    return shlex.join(["modelops-runtime", "compare", fa, fb]) if fa and fb else None


def next_step(layer: str, runs: Sequence[StepRun], replay: Replay,
              pair: tuple[str, str], direct: bool = False) -> tuple[str, str]:
    """(why, command): the one command to paste next for this layer (``direct``: your mode
    is executor=direct)."""
    if layer in ("module_state", "process_state", "warm_state", "warm_process"):
        return ("run every task in a new process meanwhile (no state carried between runs); "
                "after fixing the model, run diagnose again",
                replay(*(["worker.executor.type=isolated_warm"] if direct else []),
                       "worker.executor.maxProcessReuse=1"))
    if layer == "template_fork":
        return ("run your mode with a new interpreter per task",
                replay("worker.executor.freshProcessFrom=exec"))
    if layer == "concurrency" and pair[1] != "direct":
        return ("confirm it: your values in one worker process, one task at a time (then give "
                "each run its own files, e.g. under tempfile.mkdtemp())",
                replay("worker.replicas=1", "worker.processes=1", "worker.threads=1"))
    if layer == "outside_state":
        compared = _compare(runs, *pair)
        if compared:
            return ("see the runs that changed between the two runs of the same step (then "
                    "look for files your model reads or writes at a fixed path, and give "
                    "each run its own, e.g. under tempfile.mkdtemp())", compared)
    if layer == "native_threads":
        compared = _compare(runs, *pair)
        if pair[1] == "native-threads=2" and compared:
            # your mode already has one native thread: setting it again would change nothing
            return ("your mode already runs one native thread per task (keep it where results "
                    "are compared); see how large the differences with 2 threads are",
                    compared)
        return ("run with one native thread per task (the default)",
                replay("worker.executor.nativeThreads=1"))
    compared = _compare(runs, *pair) if pair[0] else None
    if layer and compared:
        return ("see every differing run side by side, with the package versions"
                + (" (your mode is not affected: each warm process has its own temp dir)"
                   if layer == "concurrency" else ""), compared)
    return ("try more seeds (or the parameters of the run that looked wrong)",
            replay(sims=200, command="diagnose"))
