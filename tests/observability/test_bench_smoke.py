"""bench/run.py in reduced size: it completes, writes the table, and leaves nothing behind
(also when stopped by SIGTERM half-way). Correctness only: no timing is asserted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from support.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "run.py"
TMP = Path(tempfile.gettempdir())


def bench_dirs() -> set[Path]:
    return set(TMP.glob("modelops-bench-*"))


def bench_processes(dirs: set[Path] | None = None) -> list[int]:
    """Processes running out of a benchmark work directory (warm processes, dask workers)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(proc.info["cmdline"] or [])
        if dirs is None and "modelops-bench-" in cmd or dirs and any(str(d) in cmd for d in dirs):
            found.append(proc.info["pid"])
    return found


def test_smoke_run_writes_the_table(tmp_path):
    before = bench_dirs()
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# modelops-dask benchmarks")
    assert "**Smoke run**" in md
    for row in ("| cpu |", "| cores |", "| memory |", "| python |", "| dask |"):
        assert row in md
    targets = md.split("## Targets", 1)[1].split("\n## ", 1)[0]
    for name in ("warm hit ≤ 1.0×", "fresh process ≤ 1.5×", "uv from a warm cache ≥ 15×",
                 "venv cache hit ≤ 5 ms", "prod-warm end to end ≥ 0.5×",
                 "idle warm process RSS ≤ bare interpreter + 10 MB"):
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
    assert set(data["results"]) == {"overhead", "venv", "e2e", "memory"}
    # the end-to-end sims really ran through warm processes on every worker process
    pools = data["results"]["e2e"]["pools"]
    assert len(pools) == data["results"]["e2e"]["worker_processes"]
    assert all(p["tasks"] > 0 and p["reuses"] > 0 for p in pools.values())
    assert "Traceback" not in proc.stderr

    # nothing left: no work directory, no process started from one
    assert bench_dirs() <= before
    wait_for(lambda: not bench_processes(), 30, "benchmark processes to be gone",
             on_fail=lambda: f"still running: {bench_processes()}")


def test_sigterm_during_the_cluster_benchmark_leaves_nothing(tmp_path):
    before = bench_dirs()
    proc = subprocess.Popen([sys.executable, str(BENCH), "--smoke", "--only", "e2e",
                             "--out", str(tmp_path)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        new_dirs = wait_for(lambda: bench_dirs() - before, 60, "the benchmark's work directory")
        # wait until the local cluster's Dask workers run (and so have warm processes to lose)
        wait_for(lambda: any("worker" in " ".join(c.cmdline())
                             for c in _children(proc.pid)), 120, "the local cluster's workers")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert not (tmp_path / "results.md").exists()  # no half-written table
    assert not any(d.exists() for d in new_dirs), out[-3000:]
    wait_for(lambda: not bench_processes(new_dirs), 30, "benchmark processes to be gone",
             on_fail=lambda: f"still running: {bench_processes(new_dirs)}")


def test_unknown_benchmark_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--only", "nonsense", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice: 'nonsense'" in proc.stderr
    assert "e2e" in proc.stderr and "overhead" in proc.stderr
    assert not list(tmp_path.iterdir())


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_readme_section_is_replaced_between_its_markers(tmp_path):
    import importlib.util

    # bench/ modules go on sys.path while run.py loads: take them off again afterwards
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    try:
        spec = importlib.util.spec_from_file_location("bench_run", BENCH)
        run = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(run)
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if getattr(sys.modules[name], "__file__", "") and \
                    str(REPO / "bench") in str(sys.modules[name].__file__):
                del sys.modules[name]

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
