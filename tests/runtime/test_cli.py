"""The `modelops-runtime` command: `config`, `bundle pack`, and a fresh `pip install ./runtime`."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from support.bundles import SIM_MODEL, write_bundle
from support.paths import REPO

BIN = Path(sys.executable).parent


def _run(args, env=None, exe=BIN / "modelops-runtime", timeout=120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    return subprocess.run([str(exe), *args], env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def test_config_prints_the_effective_configuration():
    res = _run(["config"], {"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_POOL_MEMORY_BYTES": "500M",
                            "MODELOPS_ENV_PASSTHROUGH": "A, B"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "MODELOPS_EXECUTOR_TYPE=direct" in lines
    assert "MODELOPS_POOL_MEMORY_BYTES=500000000" in lines
    assert "MODELOPS_ENV_PASSTHROUGH=A,B" in lines
    assert "MODELOPS_MAX_WARM_PROCESSES=128" in lines  # defaults are shown too
    assert res.stderr == ""


def test_config_reports_the_error_and_typos():
    res = _run(["config"], {"MODELOPS_MAX_WARM_PROCESSES": "0", "MODELOPS_EXECUTER_TYPE": "direct"})
    assert res.returncode == 2
    assert res.stdout == ""
    assert ("error: invalid configuration: MODELOPS_MAX_WARM_PROCESSES='0' is not allowed; "
            "expected an integer >= 1.") in res.stderr
    assert "did you mean MODELOPS_EXECUTOR_TYPE?" in res.stderr


def test_bundle_pack_prints_the_reference(tmp_path):
    src = write_bundle(tmp_path / "src", {"model.py": SIM_MODEL})
    res = _run(["bundle", "pack", str(src), "--repo", str(tmp_path / "repo")])
    assert res.returncode == 0, res.stderr
    ref = res.stdout.strip()
    assert ref.startswith("sha256:") and len(ref) == 71
    assert (tmp_path / "repo" / f"{ref[7:]}.tar.gz").is_file()

    missing = _run(["bundle", "pack", str(tmp_path / "nope"), "--repo", str(tmp_path / "repo")])
    assert missing.returncode == 1
    assert "does not exist or is not a directory" in missing.stderr


def _flags_defined(path: Path) -> set[str]:
    """The option strings a module passes to add_argument."""
    tree = ast.parse(path.read_text())
    return {arg.value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            for arg in node.args
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("-")}


def test_shared_options_have_one_definition():
    """-f/--values, --set, --study, --state-dir, --json, ...: defined in cli/options.py only,
    so each has one help text; every command module that takes one gets it from there."""
    cli = REPO / "runtime" / "src" / "modelops_runtime" / "cli"
    shared = _flags_defined(cli / "options.py")
    assert {"--values", "--set", "--state-dir", "--study", "--json"} <= shared
    for module in sorted(cli.glob("*.py")):
        if module.name != "options.py":
            assert not _flags_defined(module) & shared, module.name
    commands = {name: {s for a in sp._actions for s in a.option_strings}
                for name, sp in _subparsers().items()}
    assert {"--values", "--set", "--state-dir"} <= commands["local"] & commands["diagnose"]
    assert "--json" in commands["compare"] & commands["stats"] & commands["diagnose"]


def test_local_refuses_a_bad_batch_size_before_starting_anything(tmp_path):
    for flag, value, said in (("--batch", "0", "'0' is not a whole number >= 1"),
                              ("--batch", "two", "'two' is not a whole number >= 1"),
                              ("--batch-seconds", "0", "'0' is not a number of seconds > 0"),
                              ("--batch-seconds", "nan", "'nan' is not a number of seconds > 0")):
        out = _run(["local", "--study", str(tmp_path), flag, value,
                    "--state-dir", str(tmp_path / "state")])
        assert out.returncode == 2, out
        assert out.stderr.strip().splitlines()[-1] == (
            f"modelops-runtime local: error: argument {flag}: {said}"), out.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started


def _subparsers() -> dict:
    from modelops_runtime.cli import build_parser
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_pip_install_runtime_gives_a_working_command(tmp_path):
    """Build and install the real wheel of ./runtime into a fresh uv venv, offline.

    The dependencies are not downloaded: the fresh venv sees the project venv's
    site-packages through a .pth path line (which does not activate that venv's editable
    install of modelops-runtime), so the package itself comes from the fresh wheel."""
    venv = tmp_path / "fresh"
    uv = str(BIN / "uv")
    subprocess.run([uv, "venv", "-q", str(venv), "--python", sys.executable], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "UV_OFFLINE": "1", "UV_NO_CACHE": "1"}
    res = subprocess.run([uv, "pip", "install", "--python", str(py), "--no-deps",
                          "--no-build-isolation", str(REPO / "runtime")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr

    where = subprocess.run([str(py), "-c", "import modelops_runtime.worker.hooks.plugin, modelops_runtime.preload,"
                            " modelops_runtime.client, modelops_runtime.worker.executors.direct as d;"
                            " print(d.__file__)"], capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(site)  # the wheel, not the source tree

    version = _run(["--version"], exe=venv / "bin" / "modelops-runtime")
    assert version.returncode == 0 and version.stdout.startswith("modelops-runtime "), version
    cfg = _run(["config"], {"MODELOPS_EXECUTOR_TYPE": "direct"}, exe=venv / "bin" / "modelops-runtime")
    assert "MODELOPS_EXECUTOR_TYPE=direct" in cfg.stdout, cfg.stderr
    src = write_bundle(tmp_path / "src", {"model.py": SIM_MODEL})
    packed = _run(["bundle", "pack", str(src), "--repo", str(tmp_path / "repo")],
                  exe=venv / "bin" / "modelops-runtime")
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout.strip() == _run(["bundle", "pack", str(src), "--repo",
                                          str(tmp_path / "repo2")]).stdout.strip()
