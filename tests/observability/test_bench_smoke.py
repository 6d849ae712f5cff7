"""bench/run.py in reduced size: it completes, writes the table, and leaves nothing behind
(also when stopped by SIGTERM half-way). Correctness only: no timing is asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from support.cluster import wait_for
from support.paths import REPO
from support.wheelhouse import offline_env, require_wheelhouse

BENCH = REPO / "bench" / "run.py"


def bench_env(tmp: Path) -> dict[str, str]:
    """The benchmark's environment with its own TMPDIR: its work directory is created
    there, so the test looks only there (others may run `make bench` at the same time).
    uv is offline and installs the SIR example's numpy from the locked wheelhouse (the
    runtime passes UV_* through to its builds): the smoke run needs no network."""
    wheels = require_wheelhouse()
    tmp.mkdir()
    return {**os.environ, "TMPDIR": str(tmp), **offline_env(wheels)}


def bench_dirs(tmp: Path) -> set[Path]:
    return set(tmp.glob("modelops-bench-*"))


def bench_processes(tmp: Path) -> list[int]:
    """Live processes of this benchmark run: they inherit its TMPDIR (dask workers, warm
    processes) or run out of its work directory. Orphans are found too, not only
    descendants of the (exited) benchmark."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        try:
            ours = (str(tmp) in " ".join(proc.info["cmdline"] or [])
                    or proc.environ().get("TMPDIR") == str(tmp))
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
        if ours:
            found.append(proc.pid)
    return found


def test_smoke_run_writes_the_table(tmp_path):
    tmp = tmp_path / "tmp"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=420, cwd=REPO,
                          stdin=subprocess.DEVNULL, env=bench_env(tmp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# modelops-dask benchmarks")
    assert "**Smoke run**" in md
    for row in ("| cpu |", "| cores |", "| memory |", "| python |", "| dask |"):
        assert row in md
    targets = md.split("## Targets", 1)[1].split("\n## ", 1)[0]
    for name in ("warm hit ≤ 1.0×", "fresh process ≤ 1.5×", "uv from a warm cache ≥ 15×",
                 "venv cache hit ≤ 5 ms", "prod-warm end to end ≥ 0.5×",
                 "idle warm process RSS ≤ bare interpreter + 10 MB",
                 "through `local`, study alone: fresh-process ≤ 2× prod-warm",
                 "through `local`, study alone: diagnose-fresh-venv ≤ 2× "):
        line = next(ln for ln in targets.splitlines() if name in ln)
        assert line.rstrip().endswith(("| met |", "| **not met** |")), line
    for section in ("## Per-task overhead of a no-op entrypoint", "## Venv for a bundle with "
                    "real dependencies", "## End to end", "## Idle memory"):
        assert section in md
    for case in ("warm hit", "ProcessPoolExecutor(1)", "raw pipe", "direct", "fresh process",
                 "fresh venv", "bare python -c pass", "uv (warm cache)", "venv + pip",
                 "cache hit", "prod-warm (modelops submit)", "plain client.map"):
        assert f"| {case}" in md, case

    (raw,) = (tmp_path / "results").glob("*-smoke.json")
    data = json.loads(raw.read_text())
    assert data["smoke"] is True
    assert set(data["results"]) == {"overhead", "venv", "e2e", "memory", "fast", "steady"}
    # the steady state: a second study on a cluster kept up by `local up`, taken down after
    steady = data["results"]["steady"]
    assert "error" not in steady, steady
    assert steady["best"]["noop batch=1"] > 0 and steady["best"]["sir"] > 0
    assert "## Steady state: a second study on a warm cluster" in md
    assert "unbatched per-run overhead on a warm cluster ≤ 1.5 ms" in targets
    # the SIR example ran through `modelops-runtime local` in the three presets compared
    local = data["results"]["fast"]["sir_local"]
    assert "error" not in local, local
    # the SIR example's numpy came from the wheelhouse with uv offline, in both cases
    assert "error" not in data["results"]["fast"]["sir"], data["results"]["fast"]["sir"]
    assert all(local[m]["study_s"] > 0 for m in ("prod-warm", "fresh-process",
                                                 "diagnose-fresh-venv"))
    # fresh-process's CPU per sim measured against the bare fork floor, whole process trees
    floor = data["results"]["fast"]["fork_floor"]
    assert "error" not in floor, floor
    # (smoke sizes are below the clock tick: the values are numbers, not measurements)
    assert all(isinstance(floor[w]["cpu_per_sim_s"], float)
               for w in ("floor", "fresh-process", "prod-warm"))
    assert "bare fork floor" in md
    assert floor["above_floor_s"] == (floor["fresh-process"]["cpu_per_sim_s"]
                                      - floor["floor"]["cpu_per_sim_s"])
    # the target's miss (or hit) says what the study would take at the floor
    assert "at the floor the study would take" in targets, targets
    # the end-to-end sims really ran through warm processes on every worker process
    pools = data["results"]["e2e"]["pools"]
    assert len(pools) == data["results"]["e2e"]["worker_processes"]
    assert all(p["tasks"] > 0 and p["reuses"] > 0 for p in pools.values())
    assert "Traceback" not in proc.stderr

    # nothing left: no work directory, no process of the run
    assert not bench_dirs(tmp)
    wait_for(lambda: not bench_processes(tmp), 30, "benchmark processes to be gone",
             on_fail=lambda: f"still running: {bench_processes(tmp)}")


def test_sigterm_during_the_cluster_benchmark_leaves_nothing(tmp_path):
    tmp = tmp_path / "tmp"
    proc = subprocess.Popen([sys.executable, str(BENCH), "--smoke", "--only", "e2e",
                             "--out", str(tmp_path)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=bench_env(tmp))
    try:
        new_dirs = wait_for(lambda: bench_dirs(tmp), 60, "the benchmark's work directory")
        # wait until the local cluster's Dask workers run (and so have warm processes to lose)
        wait_for(lambda: any("worker" in cmd for cmd in _child_commands(proc.pid)), 120,
                 "the local cluster's workers")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert not (tmp_path / "results.md").exists()  # no half-written table
    assert not any(d.exists() for d in new_dirs), out[-3000:]
    wait_for(lambda: not bench_processes(tmp), 30, "benchmark processes to be gone",
             on_fail=lambda: f"still running: {bench_processes(tmp)}")


def test_unknown_benchmark_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--only", "nonsense", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice: 'nonsense'" in proc.stderr
    assert "e2e" in proc.stderr and "overhead" in proc.stderr
    assert not list(tmp_path.iterdir())


def _child_commands(pid: int) -> list[str]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    commands = []
    for child in children:
        try:
            commands.append(" ".join(child.cmdline()))
        except psutil.Error:  # exited meanwhile
            pass
    return commands


def _load_bench(name: str):
    """Import bench/<name>.py; bench/, tests/ and ci/ go on sys.path while it loads: take
    them and the modules loaded from bench/ and ci/ off again afterwards."""
    import importlib.util

    saved_path, saved_modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                      REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        for mod in set(sys.modules) - saved_modules:
            origin = str(getattr(sys.modules[mod], "__file__", "") or "")
            if origin.startswith((str(REPO / "bench"), str(REPO / "ci"))):
                del sys.modules[mod]
    return module


def test_report_of_a_miss_shows_measured_numbers_only():
    """A missed target is explained by what was measured, in one unit, with its sign."""
    report = _load_bench("report")
    overhead = {name: {"median_s": t, "p90_s": t, "n": 1} for name, t in (
        ("warm hit", 0.001), ("ProcessPoolExecutor(1)", 0.002), ("raw pipe", 0.0005),
        ("direct", 0.001), ("fresh process", 0.060), ("bare python -c pass", 0.020),
        ("fresh venv", 0.5))}
    overhead["fresh process breakdown"] = {"spawn_s": 0.045, "task_s": 0.001, "retire_s": 0.014}
    results = {"overhead": overhead,
               "memory": {"warm_rss_bytes": 9_300_000, "bare_rss_bytes": 10_000_000,
                          "modules": 40, "not_importable": []}}
    rows = {t["target"].split(" ≤ ")[0]: t for t in report.evaluate(results)}
    fresh = rows["fresh process"]
    assert not fresh["met"] and fresh["shown"] == "3.00×"
    assert fresh["note"] == ("A fresh process's task = spawn until the runner's hello 45.0 ms + "
                             "task 1.000 ms + retirement 14.0 ms, against 20.0 ms for a bare "
                             "interpreter's whole life.")
    rss = rows["idle warm process RSS"]
    assert rss["met"] and rss["shown"] == "-0.7 MB" and rss["how"] == "9.3 MB − 10.0 MB"
    page = report.build({"cpu": "x"}, results, smoke=True, elapsed_s=1.0)
    assert "MiB" not in page and "+-" not in page
    assert "| difference | -0.7 MB |" in page


def test_readme_section_is_replaced_between_its_markers(tmp_path):
    run = _load_bench("run")

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{run.README_START}\nold table\n"
                      f"{run.README_END}\n\n## Next\n")
    assert run.update_readme("| new | table |\n", readme)
    text = readme.read_text()
    assert "old table" not in text
    assert f"{run.README_START}\n| new | table |\n{run.README_END}\n\n## Next\n" in text
    assert text.startswith("# x\n\n## Benchmarks\n\n")

    without = tmp_path / "OTHER.md"
    without.write_text("# no markers\n")
    assert not run.update_readme("| new |\n", without)
    assert without.read_text() == "# no markers\n"


def test_a_failing_case_is_reported_and_fails_the_run(tmp_path):
    """bench/ never swallows an error: the other cases still run, the failure is stored
    with its type and message, and run.py's ``failures`` (exit 1 when not empty) names it."""
    fast, run = _load_bench("fast"), _load_bench("run")

    def boom(ws, smoke):
        raise RuntimeError("a case failed on purpose")

    out = fast.run(fast.Workspace(tmp_path), smoke=True,
                   cases=(("boom", boom), ("fine", lambda ws, smoke: {"wall_s": 1.0})))
    assert out["boom"] == {"error": "RuntimeError: a case failed on purpose"}
    assert out["fine"] == {"wall_s": 1.0}
    assert run.failures({"fast": out, "memory": {"warm_rss_bytes": 1}}) == [
        "fast/boom: RuntimeError: a case failed on purpose"]
    assert run.failures({"fast": {"fine": {"wall_s": 1.0}}}) == []


def test_the_memory_benchmarks_bare_interpreter_lists_only_modules_it_cannot_find(tmp_path):
    """bench/memory.py's bare interpreter imports what the warm process holds: a name it
    cannot find is listed (and measured without), a module that fails at import otherwise
    ends it with its traceback (before, ``except Exception`` hid it as "not importable")."""
    memory = _load_bench("memory")
    (tmp_path / "boom.py").write_text("raise ValueError('a module broken at import')\n")

    def bare(names: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", "-c", memory.BARE,
                               json.dumps([[str(tmp_path)], names])],
                              input="", capture_output=True, text=True, timeout=60)

    found = bare(["json", "no_such_module_here"])
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == ["no_such_module_here"]
    broken = bare(["json", "boom"])
    assert broken.returncode == 1 and broken.stdout == "", broken.stdout
    assert "ValueError: a module broken at import" in broken.stderr
