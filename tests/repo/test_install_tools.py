"""ci/install-tools.sh: pinned tools are reused, go.mod is the one place a version is
pinned, and a machine without Go is told what to do.

Every run works on a tools directory under tmp_path: the shared .tools/bin is only read
(its binaries are linked, its stamps copied), never rebuilt or rewritten by a test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from support.cluster import wait_for
from support.paths import REPO, TOOLS

SCRIPT = REPO / "ci" / "install-tools.sh"
PINS = {"helm": "v3.22.0", "helm4": "v4.3.1", "ct": "v3.14.0"}

# every external command the script runs when Go is absent (the rest are bash builtins)
UTILITIES = ("bash", "dirname", "mkdir", "sha256sum", "cut", "awk", "cat", "head", "ln", "mv",
             "date")


def _run(args: list[str], path: str, tmp_path: Path,
         script: Path = SCRIPT) -> subprocess.CompletedProcess:
    """Run the installer in its own process group; stop the whole group as soon as it
    starts a build (a test must never spend minutes compiling) or after a bounded wait."""
    out_file, err_file = tmp_path / "installer.out", tmp_path / "installer.err"
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen(["bash", str(script), *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PATH": path})
    try:
        wait_for(lambda: proc.poll() is not None or "building" in out_file.read_text(), 120,
                 "the installer to finish", on_fail=lambda: out_file.read_text())
        if proc.returncode is None:
            pytest.fail("the installer started a Go build; the tools in .tools/bin are stale: "
                        "run `make tools` first. Output:\n" + out_file.read_text())
    finally:
        if proc.returncode is None:  # unreaped: the group id is still ours
            try:
                tree = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                tree = []
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            psutil.wait_procs(tree, timeout=30)  # the killed build is gone, not dying
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_file.read_text(),
                                       err_file.read_text())


def _clean_path(tmp_path: Path, extra: dict[str, Path] | None = None) -> str:
    """A PATH holding only the shell utilities the script needs (+ ``extra`` name → binary):
    no Go, no helm, no ct, whatever this machine has installed."""
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    for name in UTILITIES:
        found = shutil.which(name)
        assert found, f"this machine lacks {name}"
        (path_dir / name).symlink_to(found)
    for name, target in (extra or {}).items():
        (path_dir / name).symlink_to(target)
    return str(path_dir)


def _built_tools(tmp_path: Path) -> Path:
    """A tools directory as a finished `make tools` leaves it: links to the built binaries
    and copies of their stamps."""
    missing = [n for n in PINS
               if not (TOOLS / n).is_file() or not (TOOLS / f".{n}.stamp").is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built in {TOOLS}: run `make tools` first")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in PINS:
        (tools / name).symlink_to(TOOLS / name)
        shutil.copy2(TOOLS / f".{name}.stamp", tools / f".{name}.stamp")
    return tools


def _repo_copy(tmp_path: Path) -> Path:
    """The installer with the Go tool modules, in a scratch repo whose go.mod may be edited."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "ci" / "tools", copy / "ci" / "tools")
    shutil.copy2(SCRIPT, copy / "ci" / "install-tools.sh")
    return copy / "ci" / "install-tools.sh"


def test_second_run_builds_nothing(tmp_path):
    tools = _built_tools(tmp_path)
    before = {p.name: p.read_text() for p in tools.glob(".*.stamp")}
    out = _run([str(tools)], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    for name, version in PINS.items():
        assert f"tools: {name} {version} already built ({tools / name})" in out.stdout, out.stdout
        assert (tools / name).readlink() == TOOLS / name
    assert {p.name: p.read_text() for p in tools.glob(".*.stamp")} == before


def test_named_tools_only(tmp_path):
    """`make run` needs helm 3 alone: naming it leaves helm4 and ct alone."""
    tools = _built_tools(tmp_path)
    out = _run([str(tools), "helm"], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"tools: helm v3.22.0 already built ({tools / 'helm'})"]


def test_unknown_tool_is_refused_before_anything_is_made(tmp_path):
    out = _run([str(tmp_path / "bin"), "helm", "kubelet"], os.environ["PATH"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "tools: unknown tool 'kubelet'; allowed: helm, helm4, ct (none: these three), podman, "
        "etcd, kube-apiserver, kube-controller-manager, kubectl, k8s (those four), registry, "
        "keda-operator, keda-adapter, keda (those two), weed.")
    assert not (tmp_path / "bin").exists()


def test_without_go_or_helm_says_what_to_install(tmp_path):
    out = _run([str(tmp_path / "bin")], _clean_path(tmp_path), tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("tools: cannot build helm v3.22.0: Go is not installed and no "
                               "helm v3.22.0 is on PATH; install Go 1.22+"), lines[0]
    assert not list((tmp_path / "bin").iterdir()), "nothing half-installed is left"


def test_without_go_a_pinned_tool_on_path_is_linked_and_then_reused(tmp_path):
    """The no-Go fallback reads the wanted version from go.mod, as the Go path does."""
    tools = _built_tools(tmp_path)
    path = _clean_path(tmp_path, {"ct": TOOLS / "ct"})
    bin_dir = tmp_path / "bin"
    out = _run([str(bin_dir), "ct"], path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"tools: using ct v3.14.0 from PATH ({tmp_path / 'path' / 'ct'})"
    assert (bin_dir / "ct").resolve() == (TOOLS / "ct").resolve()
    # the stamp it writes is the one a Go build writes: Go reuses the linked tool as built
    assert (bin_dir / ".ct.stamp").read_text() == (tools / ".ct.stamp").read_text()
    again = _run([str(bin_dir), "ct"], path, tmp_path)
    assert again.stdout.strip() == f"tools: ct v3.14.0 already built ({bin_dir / 'ct'})"


def test_version_comes_from_go_mod(tmp_path):
    """Bumping the pin in go.mod is the whole change: the installer then wants that version
    (and, without Go, refuses the older helm on PATH instead of linking it)."""
    script = _repo_copy(tmp_path)
    gomod = script.parent / "tools" / "helm3" / "go.mod"
    text = gomod.read_text()
    assert "\thelm.sh/helm/v3 v3.22.0 // indirect\n" in text
    gomod.write_text(text.replace("helm.sh/helm/v3 v3.22.0", "helm.sh/helm/v3 v3.99.0"))
    path = _clean_path(tmp_path, {"helm": TOOLS / "helm"})
    out = _run([str(tmp_path / "bin"), "helm"], path, tmp_path, script=script)
    assert out.returncode == 1
    assert out.stderr.startswith("tools: cannot build helm v3.99.0: Go is not installed and "
                                 "no helm v3.99.0 is on PATH"), out.stderr
    assert not list((tmp_path / "bin").iterdir())


def test_go_mod_without_the_module_is_named(tmp_path):
    script = _repo_copy(tmp_path)
    gomod = script.parent / "tools" / "ct" / "go.mod"
    gomod.write_text("\n".join(ln for ln in gomod.read_text().splitlines()
                               if "helm/chart-testing" not in ln or ln.startswith("tool")) + "\n")
    out = _run([str(tmp_path / "bin"), "ct"], _clean_path(tmp_path), tmp_path,
               script=script)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "tools: ci/tools/ct/go.mod does not require github.com/helm/chart-testing/v3; add it "
        "(go get -tool github.com/helm/chart-testing/v3/ct@<version>).")
    assert not list((tmp_path / "bin").iterdir())


def test_podman_is_named_only_and_nothing_present_is_reinstalled(tmp_path):
    """`podman` (the image tests' podman, runc, debootstrap from Debian) is never part of
    the default set; named alone it builds no Go tool, and what is there stays as it is."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed here (ci/install-podman.sh installs it as root on Debian)")
    out = _run([str(tmp_path / "bin"), "podman"], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tools: podman 4."), out.stdout
    assert lines[0].endswith("and runc, debootstrap already installed"), lines[0]
    assert not (tmp_path / "bin").exists(), "no Go tool was built"


def test_podman_without_apt_says_what_to_install(tmp_path):
    out = _run([str(tmp_path / "bin"), "podman"], _clean_path(tmp_path), tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("tools: cannot install podman "), lines[0]
    assert lines[0].endswith(": no apt-get here (not Debian); install podman, runc and "
                             "debootstrap with your package manager."), lines[0]


K8S_PINS = {"etcd": "v3.7.3", "kube-apiserver": "v1.37.2", "kube-controller-manager": "v1.37.2",
            "kubectl": "v1.37.2"}


def _built_k8s_tools(tmp_path: Path) -> Path:
    from support import controlplane

    reason = controlplane.unavailable(TOOLS)
    if reason:
        pytest.skip(reason)
    missing = [n for n in K8S_PINS if not (TOOLS / f".{n}.stamp").is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built in {TOOLS}: run `make tool-k8s` first")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in K8S_PINS:
        (tools / name).symlink_to(TOOLS / name)
        shutil.copy2(TOOLS / f".{name}.stamp", tools / f".{name}.stamp")
    return tools


def test_k8s_tools_are_reused_and_report_their_versions(tmp_path):
    """`k8s` names the control plane's four binaries; built ones are reused, and the
    version ldflags are set (helm refuses a chart's kubeVersion against v0.0.0-master)."""
    tools = _built_k8s_tools(tmp_path)
    out = _run([str(tools), "k8s"], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"tools: {n} {v} already built ({tools / n})"
                                       for n, v in K8S_PINS.items()]
    for name, args in (("kube-apiserver", ["--version"]), ("kubectl", ["version", "--client"]),
                       ("etcd", ["--version"])):
        said = subprocess.run([str(tools / name), *args], capture_output=True, text=True,
                              timeout=60).stdout
        assert K8S_PINS[name].lstrip("v" if name == "etcd" else "") in said, said


def test_without_go_pinned_k8s_tools_on_path_are_linked(tmp_path):
    tools = _built_k8s_tools(tmp_path)
    path = _clean_path(tmp_path, {n: TOOLS / n for n in ("etcd", "kubectl")})
    bin_dir = tmp_path / "bin"
    out = _run([str(bin_dir), "etcd", "kubectl"], path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"tools: using {n} {K8S_PINS[n]} from PATH ({tmp_path / 'path' / n})"
        for n in ("etcd", "kubectl")]
    for n in ("etcd", "kubectl"):
        assert (bin_dir / f".{n}.stamp").read_text() == (tools / f".{n}.stamp").read_text()


REGISTRY_PIN = "v3.1.2"


def test_registry_is_named_only_reused_and_reports_its_version(tmp_path):
    """`registry` (the OCI registry the image and chart tests push to) is not in the default
    set; named, a built one is reused, and its version is the pinned one (ldflags)."""
    if not (TOOLS / ".registry.stamp").is_file():
        pytest.fail(f"registry not built in {TOOLS}: run `ci/install-tools.sh {TOOLS} registry`")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "registry").symlink_to(TOOLS / "registry")
    shutil.copy2(TOOLS / ".registry.stamp", tools / ".registry.stamp")
    out = _run([str(tools), "registry"], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"tools: registry {REGISTRY_PIN} already built "
                                       f"({tools / 'registry'})"]
    said = subprocess.run([str(tools / "registry"), "--version"], capture_output=True,
                          text=True, timeout=60).stdout
    assert said.split()[1:] == ["github.com/distribution/distribution/v3", REGISTRY_PIN], said
    # without Go, the pinned registry on PATH is linked, with the stamp a Go build writes
    bin_dir = tmp_path / "bin"
    out = _run([str(bin_dir), "registry"], _clean_path(tmp_path, {"registry": TOOLS / "registry"}),
               tmp_path)
    assert out.returncode == 0, out.stderr
    assert (bin_dir / ".registry.stamp").read_text() == (tools / ".registry.stamp").read_text()


KEDA_PINS = {"keda-operator": "v2.21.1", "keda-adapter": "v2.21.1"}
KEDA_CRDS = {"keda.sh_scaledobjects.yaml", "keda.sh_scaledjobs.yaml",
             "keda.sh_triggerauthentications.yaml", "keda.sh_clustertriggerauthentications.yaml",
             "eventing.keda.sh_cloudeventsources.yaml",
             "eventing.keda.sh_clustercloudeventsources.yaml"}


def test_keda_tools_are_reused_and_its_crds_copied(tmp_path):
    """`keda` names KEDA's operator and metrics server (built with the newer Go that
    ci/tools/keda/go.mod asks for); built ones are reused, and KEDA's CRDs of the pinned
    release land next to the tools directory, where the autoscaling tests read them."""
    if shutil.which("go") is None:
        pytest.skip("no Go: KEDA (the autoscaling tests' operator) is built from the Go "
                    "module proxy; install Go 1.26+ and run `make tool-keda`")
    missing = [n for n in KEDA_PINS if not (TOOLS / f".{n}.stamp").is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built in {TOOLS}: run `make tool-keda` first")
    tools = tmp_path / "tools" / "bin"
    tools.mkdir(parents=True)
    for name in KEDA_PINS:
        (tools / name).symlink_to(TOOLS / name)
        shutil.copy2(TOOLS / f".{name}.stamp", tools / f".{name}.stamp")
    out = _run([str(tools), "keda"], os.environ["PATH"], tmp_path)
    assert out.returncode == 0, out.stderr
    crds = tmp_path / "tools" / "keda-crds"
    assert out.stdout.splitlines() == [
        *(f"tools: {n} {v} already built ({tools / n})" for n, v in KEDA_PINS.items()),
        f"tools: KEDA's CRDs in {crds}"]
    assert {p.name for p in crds.iterdir()} == KEDA_CRDS
    scaled = (crds / "keda.sh_scaledobjects.yaml").read_text()
    assert "kind: ScaledObject" in scaled and "name: v1alpha1" in scaled
