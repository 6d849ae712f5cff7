"""The packaged chart through a real OCI registry (distribution v3 on 127.0.0.1): `helm push`
stores what `helm package` made, under its version, and `helm show readme/values` of the
pulled chart show the chart's own README and values (install and upgrade from the registry
against an API server: tests/cluster/apiserver/test_oci_chart.py)."""

from __future__ import annotations

import re
import subprocess
import tarfile

import chartkit

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
    from support.registry import Registry

    with Registry() as reg:
        root, popen = reg.root, reg.popen
        assert reg.digest("nothing/here", "latest") is None
    assert popen.returncode is not None
    assert not root.exists()
