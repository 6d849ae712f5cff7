"""chart/README.md's "Try it locally" runs as written: `make apiserver` prints a KUBECONFIG,
helm 3 installs, upgrades and rolls back against it, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

import kubekit
from support import controlplane
from support.cluster import tail, wait_for

README = kubekit.CHART / "README.md"


def _block(heading: str) -> list[str]:
    section = README.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("   #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_try_it_locally_runs_as_written(tmp_path):
    reason = controlplane.unavailable()
    if reason:
        pytest.skip(reason)
    start, export, *commands = _block("Try it locally")
    assert start == "make apiserver" and export.startswith("export KUBECONFIG=")
    out = tmp_path / "apiserver.out"
    with out.open("w") as sink:
        make = subprocess.Popen(["make", "-s", "apiserver"], cwd=kubekit.REPO, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        line = wait_for(lambda: re.search(r"^export KUBECONFIG=(\S+)", out.read_text(), re.M)
                        or make.poll() is not None, controlplane.READY_TIMEOUT + 60,
                        "make apiserver to print its KUBECONFIG", interval=0.2,
                        on_fail=lambda: tail(out))
        assert make.poll() is None, f"make apiserver exited {make.returncode}:\n{tail(out)}"
        kubeconfig = Path(line.group(1))
        assert "no pod ever runs" in out.read_text(), "the pods-stay-Pending warning is missing"
        # the README's commands run from a checkout: ./chart, my-values.yaml, .tools/bin
        (tmp_path / "chart").symlink_to(kubekit.CHART)
        (tmp_path / ".tools").symlink_to(kubekit.REPO / ".tools")
        (tmp_path / "my-values.yaml").write_text(kubekit.MY_VALUES.read_text())
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
               "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
               "HELM_DATA_HOME": str(tmp_path / "helm-data")}
        results = {}
        for command in commands:
            proc = subprocess.run(shlex.split(command), cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}{proc.stderr}"
            results[command] = proc.stdout
        dry_run = next(out for c, out in results.items() if "--dry-run=client" in c)
        assert "NOTES:" in dry_run and "mode:           prod-warm (the preset)" in dry_run
        history = subprocess.run([str(kubekit.HELMS["helm3"]), "history", "sims", "-o", "json"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert [r["description"] for r in json.loads(history.stdout)] == [
            "Install complete", "Upgrade complete", "Rollback to 1"]
        assert "sims-modelops-dask-worker" in results[commands[-1]]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)   # Ctrl-C in the shell that runs it
        try:
            make.wait(timeout=controlplane.STOP_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=30)
            raise AssertionError(f"make apiserver did not stop on Ctrl-C:\n{tail(out)}") from None
    state = str(kubeconfig.parent)
    left = [p for p in psutil.process_iter(["cmdline"])
            if state in " ".join(p.info["cmdline"] or [])]
    assert not left, f"still running after Ctrl-C: {left}"
    assert not kubeconfig.parent.exists(), f"{kubeconfig.parent} was left behind"
