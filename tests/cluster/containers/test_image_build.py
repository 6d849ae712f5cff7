"""runtime/Dockerfile built with podman against the locally made base: the image's Python
meets the runtime's minimum, the flavours hold what they say, nothing of the build's
secrets and arguments stays in the image, and a rebuild with nothing changed reuses it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tomllib

import pytest
from packaging.specifiers import SpecifierSet

from podkit import IMAGE_DIR, REPO, podman, podman_env


def run_in(image: str, *cmd: str) -> subprocess.CompletedProcess:
    return podman("run", "--rm", "--read-only", "--user", "10001:10001", image, *cmd,
                  check=False, timeout=120)


@pytest.mark.parametrize("flavour", ["full", "slim"])
def test_python_meets_the_runtime_minimum(images, flavour):
    image = images(flavour)
    out = run_in(image, "python", "-c", "import platform; print(platform.python_version())")
    assert out.returncode == 0, out.stderr
    version = out.stdout.strip()
    requires = tomllib.loads((REPO / "runtime" / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version in SpecifierSet(requires), f"{image} has Python {version}, runtime needs {requires}"
    pinned = re.search(r"PYTHON_VERSION:-([0-9.]+)", (IMAGE_DIR / "podman.sh").read_text()).group(1)
    assert version == pinned, f"{image} has Python {version}, the base is pinned to {pinned}"


def test_slim_drops_the_dashboard_stack_only(full_image, slim_image):
    probe = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
             "for m in ['bokeh', 'numpy', 'PIL', 'narwhals', 'modelops_runtime', 'distributed', "
             "'uv', 'prometheus_client']}))")
    full = json.loads(run_in(full_image, "python", "-c", probe).stdout)
    slim = json.loads(run_in(slim_image, "python", "-c", probe).stdout)
    assert all(full.values()), full
    assert slim == {**full, "bokeh": False, "numpy": False, "PIL": False, "narwhals": False}, slim
    for image in (full_image, slim_image):
        out = run_in(image, "python", "-c", "import modelops_runtime.preload, modelops_runtime.client")
        assert out.returncode == 0, f"{image}: {out.stderr}"
        assert run_in(image, "dask", "--version").returncode == 0


def test_image_holds_no_build_secret_argument_or_source(full_image, slim_image):
    """The CA bundle (a build secret), the index URL (a build arg) and the sources live in
    the build stage only: the image's files, history and config name none of them."""
    ca = "/etc/ssl/certs/ca-certificates.crt"       # what build.sh passes as the secret
    ca_hash = hashlib.sha256(open(ca, "rb").read()).hexdigest()
    for image in (full_image, slim_image):
        history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        config = podman("image", "inspect", image).stdout
        for word in ("PIP_INDEX_URL", "PIP_CERT", "/run/secrets", "pipconf", "/src/runtime",
                     "pip install"):
            assert word not in history, f"{image}'s history names {word!r}:\n{history}"
            assert word not in config, f"{image}'s config names {word!r}"
        files = run_in(image, "sh", "-c",
                       "find / -xdev -type f \\( -name '*.crt' -o -name '*.pem' \\) "
                       "-exec sha256sum {} + ; ls -d /src /opt/backend /tmp/wheel /run/secrets/ca "
                       "/etc/pip.conf 2>&1 | grep -v 'No such file'; true")
        assert ca_hash not in files.stdout, f"{image} holds the build's CA bundle"
        assert "/src" not in files.stdout and "/opt/backend" not in files.stdout, files.stdout
        # the image's own layers: the base's, then the runtime user and the venv (no leftovers)
        base_name = podman("image", "inspect", "--format",
                           '{{index .Labels "org.opencontainers.image.base.name"}}', image).stdout.strip()
        base = json.loads(podman("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                 base_name).stdout)
        layers = json.loads(podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)
        assert layers[: len(base)] == base, f"{image} is not built on {base_name}"
        assert len(layers) - len(base) == 2, f"{image}: layers beyond the user and the venv:\n{history}"


def test_rebuild_with_nothing_changed_reuses_every_layer(full_image):
    before = podman("image", "inspect", "--format", "{{.Id}}", full_image).stdout.strip()
    out = subprocess.run(["bash", str(IMAGE_DIR / "build.sh"), "full"], env=podman_env(),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "already made (same inputs)" in out.stderr, out.stderr
    steps = [line for line in out.stderr.splitlines() if " STEP " in line and "RUN" in line]
    assert steps, out.stderr
    assert out.stderr.count("Using cache") >= len(steps), out.stderr
    assert podman("image", "inspect", "--format", "{{.Id}}", full_image).stdout.strip() == before


def test_an_unknown_flavour_is_refused():
    out = subprocess.run(["bash", str(IMAGE_DIR / "build.sh"), "tiny"], env=podman_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "image: flavour must be full or slim, not 'tiny'"


def test_numpy_runs_under_the_warm_runners_data_cap(full_image):
    """The runner caps its data size (RLIMIT_DATA) as the memory limit's backstop: the
    image's real numpy (OpenBLAS threads, buffers) imports and computes under the cap of a
    128 MiB limit, and an allocation past the cap fails with MemoryError."""
    from modelops_runtime.worker.warm.process import data_cap

    cap = data_cap(128 << 20)
    probe = ("import resource, sys; cap = int(sys.argv[1]); "
             "resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.RLIM_INFINITY)); "
             "import numpy as np; a = np.random.default_rng(0).random((500, 500)); "
             "print(float((a @ a).sum()) > 0)\n"
             "try:\n    np.ones(cap // 8 + 1)\nexcept MemoryError:\n    print('capped')")
    out = run_in(full_image, "python", "-c", probe, str(cap))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "capped"], out.stdout
