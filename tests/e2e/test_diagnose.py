"""`modelops-runtime diagnose` against planted bugs: each bundle below hides one kind of
state, environment or threading bug (the six of issue 16's table, a C library's global
state, a model that ignores its seed, a native-threads dependence, a checkpoint file shared
between processes, and a clean model), and diagnose must name the right
layer, with the evidence, from real local clusters rendered from the user's values.

``numlite`` stands in for numpy: a wheel built here in two versions (1.0 and 2.0, whose
``total`` differs in the last digits, like a changed BLAS default) with a module-level RNG
(``numlite.random``, like ``np.random``); the bundles' venvs install it from local
find-links, and the "worker image" (for the direct step) has 1.0 installed. No network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import assert_nothing_left
from support.bundles import write_bundle
from support.paths import PRESETS_DIR
from support.wheels import build_wheel, offline_uv_env

SIMS = 12

NUMLITE = '''
"""numlite {version}: a stand-in for numpy (test wheel)."""
import random as _random

VERSION = "{version}"


class _Random:
    def __init__(self):
        self._rng = _random.Random(12345)

    def seed(self, n):
        self._rng.seed(n)

    def random(self):
        return self._rng.random()


random = _Random()   # module-level RNG state, like np.random


def total(values):
    return sum(values) * {factor}
'''

HEAD = "import builtins, os, random, time\nimport numlite\n\n"

CHECKPOINT = """
import json, tempfile

def simulate(params, seed):
    path = os.path.join(tempfile.gettempdir(), "model-checkpoint.json")
    pause = random.SystemRandom()       # the race's timing, not the model's draws
    total = 0
    for step in range(4):
        with open(path, "w") as fh:
            json.dump({"seed": seed, "step": step}, fh)
        time.sleep(0.02 + 0.08 * pause.random())
        with open(path) as fh:
            saved = json.load(fh)
        total += numlite.total(random.Random(saved["seed"] * 10 + saved["step"]).random()
                               for _ in range(50))
    return {"total": total}
"""


def draws(seed: str = "seed") -> str:
    return f"[random.Random({seed}).random() for _ in range(50)]"


CLEAN = HEAD + f'''
def simulate(params, seed):
    return {{"total": numlite.total({draws()})}}
'''

PLANTED = {
    # 1. a module-level list: outputs change from the 2nd call in a process
    "module_state": HEAD + f'''
_SEEN = []

def simulate(params, seed):
    _SEEN.append(seed)
    return {{"total": numlite.total({draws()}) + len(_SEEN) - 1}}
''',
    # 2. numpy's global RNG seeded once per process (the flag kept in builtins)
    "process_state_rng": HEAD + '''
def simulate(params, seed):
    if not getattr(builtins, "_sim_seeded", False):
        numlite.random.seed(42)
        builtins._sim_seeded = True
    return {"total": numlite.total([numlite.random.random() for _ in range(50)])}
''',
    # 3. a counter stored on the already-imported numpy module
    "process_state_counter": HEAD + f'''
def simulate(params, seed):
    numlite._calls = getattr(numlite, "_calls", 0) + 1
    return {{"total": numlite.total({draws()}) + numlite._calls - 1}}
''',
    # 4. an unlocked module-level scratch buffer: a thread bug (needs two tasks of one
    #    process at once, which the runtime never does)
    "thread_buffer": HEAD + '''
_BUFFER = []

def simulate(params, seed):
    _BUFFER.clear()
    rng = random.Random(seed)
    for _ in range(50):
        _BUFFER.append(rng.random())
        time.sleep(0.0002)
    return {"total": numlite.total(_BUFFER)}
''',
    # 5. the cached venv modified after its build (numlite 2.0 installed into it)
    "modified_venv": CLEAN,
    # a file of the cached venv edited after its build, its size kept (validateDeps on,
    # which rebuilds it; and off, which reuses it as it is)
    "edited_venv": CLEAN,
    "edited_venv_unchecked": CLEAN,
    # 6. unpinned: the worker environment has 1.0, the bundle's venv resolves 2.0
    "unpinned": CLEAN,
    # a C library's global state (libc's rand() through ctypes, never seeded): the n-th run
    # of a process draws the n-th number, whatever re-imports the bundle
    "c_state": HEAD + f'''
import ctypes

_LIBC = ctypes.CDLL(None)

def simulate(params, seed):
    return {{"total": numlite.total({draws()}) + _LIBC.rand() % 1000}}
''',
    # the model ignores its seed
    "nondeterministic": HEAD + f'''
def simulate(params, seed):
    return {{"total": numlite.total({draws("")})}}
''',
    # a result that depends on the native thread count (as a BLAS reduction does)
    "native_threads": HEAD + f'''
def simulate(params, seed):
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "0"))
    return {{"total": numlite.total({draws()}) * (1 + 1e-9 * threads)}}
''',
    "clean": CLEAN,
    # issue 22: a generator seeded once when the module is imported, drawn per run (as
    # `np.random.seed(12345)` at import is); Python's own `random` is reseeded in every
    # fork, as numpy's legacy RNG is by the template, so the template fork once read this
    # as "not deterministic"
    "import_seed": HEAD + """
random.seed(12345)

def simulate(params, seed):
    return {"total": numlite.total([random.random() for _ in range(50)])}
""",
    # issue 22: checkpoints through one fixed file in the temp dir, which every worker
    # process of a pod shares (each warm process has its own): runs at the same time in
    # direct workers read each other's checkpoints
    "shared_checkpoint": HEAD + CHECKPOINT,
    # a multiprocessing pool per run: runs in a warm process (its own), fails in a Dask
    # worker process (a daemon may not have children)
    "process_pool": HEAD + f'''
import multiprocessing

def _part(seed):
    return numlite.total({draws()})

def simulate(params, seed):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return {{"total": sum(pool.map(_part, [seed * 10, seed * 10 + 1]))}}
''',
    # an atexit handler saves the last total at a fixed path, and a run starts from it when
    # it is there: a warm process may not write there, a direct worker process does when it
    # exits, and every step after direct reads it (@FIXED_PATH@: a path of this test's own)
    "atexit_file": HEAD + f'''
import atexit, json
PATH = "@FIXED_PATH@"
LAST = {{}}

def _save():
    with open(PATH, "w") as fh:
        json.dump(LAST, fh)

atexit.register(_save)

def simulate(params, seed):
    start = 0.0
    if os.path.exists(PATH):
        with open(PATH) as fh:
            start = json.load(fh)["total"]
    LAST["total"] = numlite.total({draws()}) + start * 0.5
    return {{"total": LAST["total"]}}
''',
    # the checkpoint at a literal path (not the temp dir): warm processes may not write there
    # (every run of the reference fails), direct's worker processes race on it
    "fixed_path_checkpoint": HEAD + CHECKPOINT.replace(
        'os.path.join(tempfile.gettempdir(), "model-checkpoint.json")', '"@FIXED_PATH@"'),
    # iterates over a set of strings: its order follows the interpreter's hash seed, which
    # Dask fixes in its worker processes (PYTHONHASHSEED) and a new interpreter draws
    "set_order": HEAD + """
NAMES = ["susceptible", "exposed", "infectious", "recovered", "dead", "hospital"]

def simulate(params, seed):
    rng = random.Random(seed)
    return {"total": numlite.total([(i + 1) * len(n) * rng.random()
                                    for i, n in enumerate(set(NAMES))])}
""",
}

# planted bug → (exit code, first finding's layer or None, text the evidence must hold)
EXPECTED = {
    "module_state": (3, "module_state", "ran after other tasks of their process"),
    "process_state_rng": (3, "process_state", "direct differs from fresh-process too"),
    "process_state_counter": (3, "process_state", "direct differs from fresh-process too"),
    "thread_buffer": (0, None, "never runs two tasks in one Python process at once"),
    "modified_venv": (3, "cached_venv", "numlite 2.0 (fresh-process, bundle venv) vs 1.0 "
                                        "(fresh-venv, bundle venv)"),
    # failed before: "validateDeps is on in your mode and did not catch it" (it compared
    # the files' sizes only); now every worker process of the mode rebuilt the venv
    "edited_venv": (0, None, "not reproduced in any mode"),
    # failed before: also named native threads and concurrency (their steps use the edited
    # venv, and were read against fresh-venv)
    "edited_venv_unchecked": (3, "cached_venv", "set worker.executor.validateDeps: true"),
    "c_state": (3, "process_state", "direct differs from fresh-process too"),
    "unpinned": (3, "worker_env", "numlite 2.0 (fresh-process, bundle venv) vs 1.0 (direct, "
                                  "worker environment)"),
    "nondeterministic": (3, "nondeterministic", "every task ran as the first of its process"),
    "native_threads": (3, "native_threads", "differ between fresh-process and native-threads=2"),
    "clean": (0, None, "not reproduced in any mode"),
    # failed before: "the model is not deterministic" (fresh-process forked from a template)
    "import_seed": (3, "module_state", "direct (bundle modules re-imported per task, the "
                                       "process kept) agrees with fresh-process"),
    # failed before: "the worker environment differs from the bundle's venv"
    "shared_checkpoint": (3, "concurrency", "direct-one-process (executor=direct, one worker "
                                            "process, one task at a time) agrees with "
                                            "fresh-process"),
    # failed before: "your model gives other results in the worker's own process ... it
    # depends on something else of the worker (environment variables, ...)", not a word of
    # every direct run failing
    "process_pool": (3, "direct_process", f"{SIMS} of them failed in direct and ran in "
                                          "fresh-process (first: seed "),
    # failed before: "your model's results depend on how many threads numerical libraries
    # use" (native-threads=2 ran after direct, whose worker processes wrote the file)
    "atexit_file": (3, "outside_state", "fresh-process ran once more after the other steps, "
                                        "with the same settings"),
}


@pytest.fixture(scope="module")
def numlite_wheels(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numlite-wheels")
    build_wheel(root, "numlite", "1.0",
                {"numlite/__init__.py": NUMLITE.format(version="1.0", factor="1.0")})
    build_wheel(root, "numlite", "2.0",
                {"numlite/__init__.py": NUMLITE.format(version="2.0", factor="(1 + 1e-12)")})
    return root


@pytest.fixture(scope="module")
def worker_site(numlite_wheels, tmp_path_factory) -> Path:
    """numlite 1.0 installed as a worker image would have it (for the direct step)."""
    site = tmp_path_factory.mktemp("worker-site")
    subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--quiet",
                    "--python", sys.executable, "--target", str(site), "numlite==1.0"],
                   env={**os.environ, **offline_uv_env(numlite_wheels),
                        "UV_CACHE_DIR": str(site.parent / "uv-cache")},
                   check=True, capture_output=True, timeout=120)
    return site


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory) -> Path:
    """One state directory (uv, bundle and venv caches) for the planted bugs that do not
    touch the caches, as a user's repeated diagnose runs would share it."""
    return tmp_path_factory.mktemp("diagnose-state")


def env_for(wheels: Path, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    env.update(offline_uv_env(wheels), PYTHONUNBUFFERED="1", PYTHONPATH=str(site))
    return env


def study(tmp_path: Path, name: str) -> Path:
    requirement = "numlite>=1.0" if name == "unpinned" else "numlite==1.0"
    model = PLANTED[name].replace("@FIXED_PATH@", str(tmp_path / "fixed-path.json"))
    write_bundle(tmp_path / name / "bundle", {"model.py": model,
                                               "requirements.txt": requirement + "\n"})
    (tmp_path / name / "study.yaml").write_text(
        f"name: {name}\nbundle: bundle\nentrypoint: model:simulate\nsims: {SIMS}\n")
    return tmp_path / name


def values(tmp_path: Path, *, threads: int = 1, validate_deps: bool = True) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(f"mode: prod-warm\nworker:\n  processes: 2\n  threads: {threads}\n"
                    f"  executor: {{validateDeps: {str(validate_deps).lower()}}}\n")
    return path


def diagnose(local_cli, args: list, env: dict, timeout: float = 900):
    run = local_cli.run(args, env, timeout=timeout, command="diagnose")
    assert_nothing_left(run)
    return run


def edit_cached_venv(state: Path) -> None:
    """Edit numlite's module in the venv the first run cached, keeping its size (as a hand
    edit of a constant would): 1.0's ``* 1.0`` becomes ``* 2.0``."""
    files = list(state.glob("volumes/**/site-packages/numlite/__init__.py"))
    assert len(files) == 1, files
    text = files[0].read_text()
    assert "sum(values) * 1.0" in text
    folder = files[0].parent
    mode = folder.stat().st_mode          # venv folders are read-only once published
    folder.chmod(mode | 0o200)
    try:
        edited = files[0].with_name("edited.tmp")
        edited.write_text(text.replace("sum(values) * 1.0", "sum(values) * 2.0"))
        os.replace(edited, files[0])
    finally:
        folder.chmod(mode)


def modify_cached_venv(state: Path, wheels: Path) -> None:
    """Install numlite 2.0 into the venv the first run cached (as a `pip install` into it
    would)."""
    venvs = [p.parent for p in state.glob("volumes/**/pyvenv.cfg")]
    assert len(venvs) == 1, venvs
    subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--quiet",
                    "--python", str(venvs[0] / "bin" / "python"), "numlite==2.0"],
                   env={**os.environ, **offline_uv_env(wheels),
                        "UV_CACHE_DIR": str(state / "uv-cache-test")},
                   check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("bug", list(EXPECTED))
def test_each_planted_bug_gets_its_verdict(bug, local_cli, numlite_wheels, worker_site,
                                           shared_state, tmp_path):
    code, layer, evidence = EXPECTED[bug]
    env = env_for(numlite_wheels, worker_site)
    state = shared_state
    vals = values(tmp_path, threads=2 if bug == "thread_buffer" else 1,
                  validate_deps=bug not in ("modified_venv", "edited_venv_unchecked"))
    if bug in ("modified_venv", "edited_venv", "edited_venv_unchecked"):
        # the user's own run built and cached the venv; then it was modified
        state = tmp_path / "state"
        run = local_cli.run(["-f", vals, "--study", study(tmp_path, bug), "--sims", 2,
                             "--state-dir", state, "--no-progress"], env)
        assert run.popen.returncode == 0, run.output
        if bug.startswith("edited_venv"):
            edit_cached_venv(state)
        if bug == "edited_venv":  # the user's next run rebuilds it and says so
            again = local_cli.run(["-f", vals, "--study", study(tmp_path, bug), "--sims", 2,
                                   "--state-dir", state, "--no-progress"], env)
            assert again.popen.returncode == 0, again.output
            assert ("cached venvs rebuilt because they had changed since their build: 1"
                    in again.stdout), again.output
        else:
            modify_cached_venv(state, numlite_wheels)
    report = tmp_path / "report.html"
    run = diagnose(local_cli, ["-f", vals, "--study", study(tmp_path, bug), "--sims", SIMS,
                               "--state-dir", state, "--json", "--report", report], env)
    assert run.popen.returncode == code, run.output
    doc = json.loads(run.stdout)
    findings = doc["findings"]
    if layer is None:
        assert findings == [], run.output
        assert evidence in doc["summary"] + " ".join(doc["next_steps"]), run.output
    else:
        assert findings and findings[0]["layer"] == layer, run.output
        assert evidence in " ".join(findings[0]["evidence"]), run.output
    # a progress line per step, with its time (a fresh-process found to differ from a new
    # interpreter is renamed fresh-process-template after it ran); the picture in a
    # self-contained page
    ran = [s for s in doc["steps"] if s["ran"]]
    for s in ran:
        name = {"fresh-process-template": "fresh-process",
                "fresh-venv-template": "fresh-venv"}.get(s["name"], s["name"])
        assert f"diagnose: step {s['index']} {name}: " in run.stderr, run.output
        assert Path(s["results"]).is_file()
    page = report.read_text()
    assert "<svg" in page and doc["summary"].split(":")[0] in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    names = [s["name"] for s in ran]
    if bug in ("module_state", "process_state_rng", "process_state_counter"):
        # fresh-process explained it: the costly fresh-venv step was skipped
        assert "fresh-venv" not in names, names
    if bug == "nondeterministic":
        # the template is checked (and not blamed), and one process is tried twice
        assert names == ["your-mode", "your-mode-again", "fresh-process-exec",
                         "fresh-process-template", "fresh-process", "fresh-process-again",
                         "one-process", "one-process-again"], names
        assert doc["reference"] == "fresh-process", doc["reference"]
    # the reference was checked against a new interpreter per task on the first seeds; a
    # template that differed is said, and the reference then ran from exec
    assert "fresh-process-exec" in names, names
    # in one worker process: a new interpreter per task sees nothing of the processes beside it
    sample = next(s for s in ran if s["name"] == "fresh-process-exec")
    assert "1×1×1 (pods×processes×threads)" in sample["mode"], sample
    # fresh-venv likewise, against a venv built per task and a new interpreter, where that
    # can change the verdict: when fresh-venv differs from the checked fresh-process
    if layer == "cached_venv":
        assert "fresh-venv-exec" in names, names
    elif "fresh-venv" in names:
        assert "fresh-venv-exec" not in names, names
        said = [s["skipped"] for s in doc["steps"] if s["name"] == "fresh-venv-exec"]
        assert said and said[0].startswith("fresh-venv agrees with fresh-process"), doc["steps"]
    if "fresh-process-template" in names and bug != "nondeterministic":
        assert doc["reference"].startswith(
            "fresh-process from a new interpreter per task (exec), because "), doc["reference"]
    if bug == "import_seed":
        assert "nondeterministic" not in json.dumps(findings), run.output
    if bug == "process_pool":
        assert findings[0]["headline"].startswith(
            "your model fails in the worker's own process (executor=direct)"), run.output
        assert "daemonic processes are not allowed to have children" in doc["summary"]
        assert "your mode runs the model in its own process and is not affected" in doc["summary"]
    if bug == "shared_checkpoint":
        assert "worker environment" not in doc["summary"], run.output
    if bug == "edited_venv_unchecked":
        assert [f["layer"] for f in findings] == ["cached_venv"], run.output
    if bug == "native_threads":
        # failed before: `--set worker.executor.nativeThreads=1`, the value the mode already has
        assert doc["next_command"].startswith("modelops-runtime compare "), doc["next_command"]
    if bug == "atexit_file":
        # read against the reference run after every step, no layer of a later step is left
        assert [f["layer"] for f in findings] == ["outside_state"], run.output
        assert names[-1] == "fresh-process-after", names
        assert "compare" in doc["next_command"] and "fresh-process-after" in doc["next_command"]
    if layer is not None:
        assert doc["next_command"].startswith("modelops-runtime "), doc


@pytest.mark.parametrize("case", ["missing-study", "values-do-not-render", "every-sim-fails",
                                  "every-sim-writes-a-fixed-tmp-path"])
def test_bad_input_is_one_error_line_and_nothing_is_left(case, local_cli, numlite_wheels,
                                                        worker_site, shared_state, tmp_path):
    env = env_for(numlite_wheels, worker_site)
    vals, the_study = values(tmp_path), tmp_path / "nowhere"
    expected = f"error: no study at {the_study}"
    if case == "values-do-not-render":
        the_study = study(tmp_path, "clean")
        vals.write_text("worker: {processes: 0}\n")
        expected = "error: the chart rejected these values"
    elif case == "every-sim-fails":
        the_study = study(tmp_path, "clean")
        (the_study / "bundle" / "model.py").write_text(
            "def simulate(params, seed):\n    raise ValueError('broken model')\n")
        expected = (f"error: every one of the {SIMS} sims failed in your mode, so there is "
                    "nothing to compare (first: seed ")
    elif case == "every-sim-writes-a-fixed-tmp-path":
        # a modeller's checkpoint at a literal /tmp path: warm processes may not write there,
        # and the runtime's refusal ends in the value to set, which must be said whole
        the_study = study(tmp_path, "clean")
        (the_study / "bundle" / "model.py").write_text(
            "def simulate(params, seed):\n"
            "    with open('/tmp/diagnose-test-fixed-path.json', 'w') as fh:\n"
            "        fh.write(str(seed))\n"
            "    return {'seed': seed}\n")
        expected = (f"error: every one of the {SIMS} sims failed in your mode, so there is "
                    "nothing to compare (first: seed ")
    run = local_cli.run(["-f", vals, "--study", the_study, "--sims", SIMS, "--state-dir",
                         shared_state, "--json"], env, timeout=600, command="diagnose")
    assert run.popen.returncode == 1, run.output
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), run.output
    assert "Traceback" not in run.stderr and run.stdout == "", run.output
    if case == "every-sim-fails":
        assert "ValueError: broken model" in errors[0]
        assert_nothing_left(run)
    if case == "every-sim-writes-a-fixed-tmp-path":
        # failed before: the first failure was cut at 300 characters, mid-word
        # ("... add it to worker.executor.wri); fix the model ...")
        assert "writing /tmp/diagnose-test-fixed-path.json was refused" in errors[0], errors[0]
        assert "worker.executor.writablePaths" in errors[0], errors[0]
        assert not Path("/tmp/diagnose-test-fixed-path.json").exists()
        assert_nothing_left(run)
    assert not run.alive()


def test_ctrl_c_stops_the_running_step_and_leaves_nothing(local_cli, numlite_wheels,
                                                          worker_site, shared_state, tmp_path):
    env = env_for(numlite_wheels, worker_site)
    run = local_cli.start(["-f", values(tmp_path), "--study", study(tmp_path, "clean"),
                           "--sims", SIMS, "--state-dir", shared_state], env, "diagnose")
    run.wait_for_line("diagnose: step 2 your-mode-again: your values again", timeout=600)
    os.killpg(run.popen.pid, signal.SIGINT)
    assert run.wait(120) == 130, run.output
    assert "interrupted: the running step's cluster was stopped" in run.stderr, run.output
    assert_nothing_left(run)


DEBUG_PARALLEL = PRESETS_DIR / "debug-parallel.yaml"


def test_a_shared_checkpoint_file_in_a_direct_mode_is_concurrency(local_cli, numlite_wheels,
                                                                  worker_site, shared_state,
                                                                  tmp_path):
    """Issue 22's report from debug-parallel: your mode differs from itself in every seed;
    one process, twice, is stable, so the verdict is concurrency, not "not deterministic"
    (failed before: "the model is not deterministic: the same mode, with a fresh process per
    task, ..." with one-process skipped)."""
    env = env_for(numlite_wheels, worker_site)
    run = diagnose(local_cli, ["-f", DEBUG_PARALLEL, "--study",
                               study(tmp_path, "shared_checkpoint"), "--sims", SIMS,
                               "--state-dir", shared_state, "--json"], env)
    assert run.popen.returncode == 3, run.output
    doc = json.loads(run.stdout)
    assert doc["findings"][0]["layer"] == "concurrency", run.output
    assert "fresh process per task" not in doc["summary"], run.output
    names = [s["name"] for s in doc["steps"] if s["ran"]]
    assert {"your-mode", "your-mode-again", "fresh-process", "one-process",
            "one-process-again"} <= set(names), names
    assert "worker.processes=1" in doc["next_command"], doc


def test_a_direct_mode_without_its_requirements_runs_the_warm_steps(local_cli, numlite_wheels,
                                                                   shared_state, tmp_path):
    """A direct preset whose local worker environment lacks the bundle's requirements (no
    numlite on the workers' path): the warm steps run, the direct ones say in one line how
    to provide it (failed before: every step skipped, then `LookupError: no reference step
    ran`)."""
    env = env_for(numlite_wheels, tmp_path / "empty-site")
    run = diagnose(local_cli, ["-f", DEBUG_PARALLEL, "--study", study(tmp_path, "clean"),
                               "--sims", SIMS, "--state-dir", shared_state], env)
    assert run.popen.returncode == 0, run.output
    assert "Traceback" not in run.output and "LookupError" not in run.output, run.output
    lines = run.stdout.splitlines()
    assert any(line.startswith("verdict: no difference") for line in lines), run.output
    ran = [line.split()[2] for line in lines if line.startswith("step ")]
    assert ran[:2] == ["fresh-process-exec", "fresh-process"] and "one-process" in ran, ran
    said = [line for line in lines if line.startswith("your-mode was not run: ")]
    assert len(said) == 1 and "lacks the bundle's numlite==1.0" in said[0], run.output
    assert "pip install -r " in said[0] and said[0].endswith("."), said


# from a direct preset: bundle → (first finding's layer, text its evidence must hold)
DIRECT_MODE = {
    # failed before: "the model is not deterministic" (one process was stable twice, but
    # fresh-process, the reference, failed every run: warm processes may not write there)
    "fixed_path_checkpoint": ("concurrency", "so they could not be compared with it (first: "
                                             "seed "),
    # failed before: "your model gives other results in the worker's own process ... it
    # depends on something else of the worker" (your mode agrees with itself: Dask fixes the
    # hash seed; a new interpreter per task differed from itself, and was the reference)
    "set_order": ("nondeterministic", "a new interpreter per task differs from itself: "),
}


@pytest.mark.parametrize("bug", list(DIRECT_MODE))
def test_planted_bugs_from_a_direct_preset(bug, local_cli, numlite_wheels, worker_site,
                                           shared_state, tmp_path):
    layer, evidence = DIRECT_MODE[bug]
    env = env_for(numlite_wheels, worker_site)
    run = diagnose(local_cli, ["-f", DEBUG_PARALLEL, "--study", study(tmp_path, bug),
                               "--sims", SIMS, "--state-dir", shared_state, "--json"], env)
    assert run.popen.returncode == 3, run.output
    doc = json.loads(run.stdout)
    findings = doc["findings"]
    assert findings and findings[0]["layer"] == layer, run.output
    assert evidence in " ".join(findings[0]["evidence"]), run.output
    assert doc["next_command"].startswith("modelops-runtime "), doc
