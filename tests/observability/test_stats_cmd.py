"""`modelops-runtime stats --scheduler ADDR` against a real local cluster, run as the user
runs it (the installed console script in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from support.ports import HeldPort

CLI = str(Path(sys.executable).parent / "modelops-runtime")


def stats(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "stats", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_table_has_one_row_per_worker_process_and_a_total(shared):
    warm = shared.workers["warm"]
    shared.run_on(warm[1], 3, start_seed=100)
    shared.run_on(shared.workers["direct"][0], 1, start_seed=100)

    proc = stats("--scheduler", shared.cluster.address)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("WORKER"))
    for column in ("EXECUTOR", "TASKS", "SPAWNS", "REUSES", "VENV HITS", "VENV MISSES",
                   "VENV BUILDS", "BUILD S", "REMOVALS", "PROCS", "POOL RSS"):
        assert column in lines[header]
    all_workers = sorted(a for addrs in shared.workers.values() for a in addrs)
    rows = {addr: [line for line in lines if f" {addr} " in line] for addr in all_workers}
    assert all(len(found) == 1 for found in rows.values()), proc.stdout  # one row each
    for addr in warm:
        assert "isolated_warm" in rows[addr][0].split()
    assert "direct" in rows[shared.workers["direct"][0]][0].split()
    assert "none" in rows[shared.workers["bare"][0]][0].split()
    # the bare worker is explained, the total sums the three with a runtime
    assert any(shared.workers["bare"][0] in line and "--preload modelops_runtime.preload" in line
               for line in lines if line.startswith("note:"))
    total = next(line for line in lines if line.startswith("total"))
    assert total.startswith("total (3 of 4)")
    assert "isolated_warm" in total and "direct" in total
    # warm[1] ran 3 tasks with MAX_PROCESS_REUSE=2: it shows a retirement by reason
    assert "reuse=" in rows[warm[1]][0]

    # the JSON form carries the same figures: the total is the sum of the rows
    proc = stats("--scheduler", shared.cluster.address, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(r["address"] for r in data["workers"]) == all_workers
    tasks = sum(r["figures"]["stats"]["tasks"] for r in data["workers"]
                if "tasks" in r["figures"]["reported"])
    assert data["total"]["tasks"] == tasks >= 4
    by_addr = {r["address"]: r["figures"] for r in data["workers"]}
    assert by_addr[warm[1]]["stats"]["removals"]["reuse"] >= 1
    assert by_addr[shared.workers["direct"][0]]["reported"] == ["tasks"]


def stats_processes() -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(part.endswith("modelops-runtime") for part in cmd) and "stats" in cmd:
            found.append(proc.info["pid"])
    return found


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    with HeldPort() as nobody:  # held, never listening: nothing answers there
        port = nobody.port
        proc = stats("--scheduler", f"tcp://127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 1
    assert proc.stdout == ""
    err = proc.stderr.strip()
    assert err.startswith(f"error: cannot read the cluster's figures from the Dask scheduler "
                          f"at 'tcp://127.0.0.1:{port}'")
    assert "tcp://HOST:PORT" in err and "port-forward" in err
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert not stats_processes()  # nothing left running


def test_malformed_address_and_bad_timeout(tmp_path):
    proc = stats("--scheduler", "no-port-here")
    assert proc.returncode == 1
    assert "'no-port-here'" in proc.stderr and "tcp://HOST:PORT" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = stats("--scheduler", "tcp://127.0.0.1:8786", "--timeout", "0")
    assert proc.returncode == 2
    assert "--timeout must be > 0" in proc.stderr

    proc = stats()
    assert proc.returncode == 2
    assert "--scheduler" in proc.stderr
