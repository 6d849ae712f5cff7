"""The packaged chart through a real OCI registry (distribution v3 on 127.0.0.1): `helm push`
stores what `helm package` made, under its version, and `helm show readme/values` of the
pulled chart show the chart's own README and values (install and upgrade from the registry
against an API server: tests/cluster/apiserver/test_oci_chart.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil

import chartkit
from support import controlplane, registry
from support.cluster import wait_for
from support.paths import TESTS

CHART_NAME = "modelops-dask"


def run_helm(which: str, reg, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(chartkit.helm_binary(which)), *args], env=reg.env(),
                         capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stderr}"
    return out


def version() -> str:
    return re.search(r"^version: (\S+)$", (chartkit.CHART / "Chart.yaml").read_text(),
                     re.M).group(1)


def test_pushed_chart_shows_its_own_readme_and_values(helm, packaged, oci_registry, tmp_path):
    reg, ver = oci_registry, version()
    pushed = run_helm(helm, reg, "push", str(packaged[helm]), f"oci://{reg.host}/charts",
                  "--plain-http")
    said = pushed.stdout + pushed.stderr
    digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", said).group(1)
    assert f"Pushed: {reg.host}/charts/{CHART_NAME}:{ver}" in said, said
    # what the registry serves under the version is what helm pushed
    assert reg.digest(f"charts/{CHART_NAME}", ver) == digest

    ref = f"oci://{reg.host}/charts/{CHART_NAME}"
    readme = run_helm(helm, reg, "show", "readme", ref, "--version", ver, "--plain-http").stdout
    assert readme.strip() == (chartkit.CHART / "README.md").read_text().strip()
    values = run_helm(helm, reg, "show", "values", ref, "--version", ver, "--plain-http").stdout
    assert values.strip() == (chartkit.CHART / "values.yaml").read_text().strip()
    meta = run_helm(helm, reg, "show", "chart", ref, "--version", ver, "--plain-http").stdout
    assert f"version: {ver}" in meta and f"name: {CHART_NAME}" in meta

    # pulled by version: the very archive helm package made (presets and README inside)
    dest = tmp_path / "pulled"
    dest.mkdir()
    run_helm(helm, reg, "pull", ref, "--version", ver, "--plain-http", "-d", str(dest))
    pulled = dest / packaged[helm].name
    assert pulled.read_bytes() == packaged[helm].read_bytes()
    with tarfile.open(pulled) as tar:
        names = set(tar.getnames())
    assert {f"{CHART_NAME}/README.md", f"{CHART_NAME}/values.schema.json",
            f"{CHART_NAME}/presets/prod-warm.yaml"} <= names, sorted(names)
    # served from the registry, not from a local copy
    assert reg.requests("GET", rf"^/v2/charts/{CHART_NAME}/manifests/{re.escape(ver)}$")


def test_a_version_not_in_the_registry_is_one_line_naming_it(helm, packaged, oci_registry):
    reg = oci_registry
    run_helm(helm, reg, "push", str(packaged[helm]), f"oci://{reg.host}/charts", "--plain-http")
    out = run_helm(helm, reg, "show", "values", f"oci://{reg.host}/charts/{CHART_NAME}",
               "--version", "9.9.9", "--plain-http", check=False)
    assert out.returncode != 0 and not out.stdout
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("Error:")]
    assert line.endswith(f"{reg.host}/charts/{CHART_NAME}:9.9.9: not found"), out.stderr


def test_the_registry_stops_with_nothing_left():
    """The fixture's own promise: its process is gone and its storage removed after stop."""
    with registry.Registry() as reg:
        root, popen = reg.root, reg.popen
        assert reg.digest("nothing/here", "latest") is None
    assert popen.returncode is not None
    assert not root.exists()


KEEP_RUNNING = """
import json, time
from support.registry import Registry
with Registry() as reg:
    print(json.dumps({"root": str(reg.root), "pid": reg.popen.pid}), flush=True)
    while True:
        time.sleep(1)
"""


def test_a_sigkilled_session_leaves_no_registry_and_its_storage_is_swept(tmp_path):
    """No finalizer runs after SIGKILL: the registry dies with its parent (PDEATHSIG) and
    its directory goes at the next session's (or registry's) start."""
    out = tmp_path / "out"
    with out.open("w") as f:
        popen = subprocess.Popen([sys.executable, "-c", KEEP_RUNNING], stdout=f,
                                 stderr=subprocess.STDOUT, cwd=TESTS, start_new_session=True,
                                 env={**os.environ, "PYTHONPATH": str(TESTS)})
    try:
        line = wait_for(lambda: "\n" in out.read_text() and out.read_text().split("\n", 1)[0]
                        or (popen.poll() is not None and "exited"), registry.READY_TIMEOUT + 30,
                        "the registry to come up", on_fail=out.read_text)
        info = json.loads(line)
        proc = psutil.Process(info["pid"])
        popen.kill()
        popen.wait(30)
        wait_for(lambda: not controlplane.still_running([proc]), 30,
                 "the registry to die with its parent")
        root = Path(info["root"])
        assert (root / "data").is_dir()   # nobody was left to remove it ...
        assert root in controlplane.sweep_stale(root.parent, prefix=registry.ROOT_PREFIX)
        assert not root.exists()          # ... until the next start
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(30)
