"""`mode:` selects a preset shipped inside the chart; explicit mode keys win; a packaged
chart carries the presets; `--reuse-values --set mode=...` switches the mode."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest
import yaml

import chartkit
from chartkit import PRESETS, render

SCHEMA = json.loads((chartkit.CHART / "values.schema.json").read_text())
SHIPPED = chartkit.CHART / "presets"


def _mode(out) -> tuple:
    worker = out.container("worker")
    args, env = worker["args"], {e["name"]: e["value"] for e in worker["env"]}
    return (args[args.index("--nworkers") + 1], args[args.index("--nthreads") + 1],
            env["MODELOPS_EXECUTOR_TYPE"], env["MODELOPS_FORCE_FRESH_VENV"],
            env["MODELOPS_MAX_PROCESS_REUSE"])


def _preset_mode(name: str) -> tuple:
    w = yaml.safe_load((chartkit.PRESETS_DIR / f"{name}.yaml").read_text())["worker"]
    x = w["executor"]
    return (str(w["processes"]), str(w["threads"]), x["type"],
            str(x["forceFreshVenv"]).lower(), str(x["maxProcessReuse"]))


# ---- the presets in the chart are values-examples/ ----------------------------------

def test_the_chart_ships_exactly_the_values_examples():
    """values-examples/ are the design card's top-level files; the chart carries the same
    bytes (copy with `cp values-examples/*.yaml chart/presets/` after editing one)."""
    assert sorted(p.name for p in SHIPPED.iterdir()) == sorted(f"{p}.yaml" for p in PRESETS)
    for name in PRESETS:
        shipped, example = SHIPPED / f"{name}.yaml", chartkit.PRESETS_DIR / f"{name}.yaml"
        assert not shipped.is_symlink(), f"{shipped} must be a file: helm package keeps it"
        assert shipped.read_bytes() == example.read_bytes(), (
            f"{shipped} differs from {example}: copy values-examples/{name}.yaml over it")


def test_mode_enum_lists_every_shipped_preset():
    assert SCHEMA["properties"]["mode"]["enum"] == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_names_its_own_mode(name):
    assert yaml.safe_load((chartkit.PRESETS_DIR / f"{name}.yaml").read_text())["mode"] == name


def test_mode_keys_are_null_in_values_yaml():
    """Helm merges values before a template runs: only a null default lets the chart tell
    'not set' from 'set to the default', so the preset can fill exactly the unset keys."""
    w = yaml.safe_load((chartkit.CHART / "values.yaml").read_text())["worker"]
    assert [w["processes"], w["threads"], w["executor"]["type"],
            w["executor"]["forceFreshVenv"], w["executor"]["maxProcessReuse"]] == [None] * 5


# ---- selecting a mode ------------------------------------------------------------------

@pytest.mark.parametrize("name", PRESETS)
def test_mode_renders_exactly_what_the_preset_file_renders(helm, name):
    by_mode = render(helm, sets=(f"mode={name}",))
    by_file = render(helm, name)
    assert by_mode.objects == by_file.objects
    assert _mode(by_mode) == _preset_mode(name)


def test_the_default_mode_is_prod_warm(helm):
    assert render(helm).objects == render(helm, sets=("mode=prod-warm",)).objects


def test_an_explicit_mode_key_wins_over_the_preset(helm):
    out = render(helm, sets=("mode=debug-isolated", "worker.threads=2"))
    assert _mode(out) == ("1", "2", "direct", "false", "1000")


def test_explicit_keys_win_in_a_values_file_too(helm):
    values = "mode: fresh-process\nworker: {executor: {maxProcessReuse: 5}}"
    assert _mode(render(helm, values=values)) == ("4", "1", "isolated_warm", "false", "5")


def test_the_last_preset_file_still_wins_completely(helm):
    """The pre-`mode` way: every preset file sets the mode and all mode keys."""
    assert _mode(render(helm, "debug-isolated", "fresh-process")) == _preset_mode("fresh-process")


def test_reuse_values_then_set_mode_switches_the_mode(helm, tmp_path):
    """`helm upgrade --reuse-values --set mode=fresh-process`: helm renders the upgrade with
    the previous release's values (chart defaults + user values, as `helm get values --all`
    shows them, mode keys still null) plus the new --set. The nulls resolve to the new mode."""
    installed = render(helm, sets=("mode=debug-isolated",))
    assert _mode(installed) == _preset_mode("debug-isolated")
    all_values = yaml.safe_load((chartkit.CHART / "values.yaml").read_text())
    all_values.update(yaml.safe_load(chartkit.MY_VALUES.read_text()))
    all_values["mode"] = "debug-isolated"
    previous = tmp_path / "previous-release-values.yaml"
    previous.write_text(yaml.safe_dump(all_values))
    upgraded = render(helm, str(previous), sets=("mode=fresh-process",))
    assert _mode(upgraded) == _preset_mode("fresh-process")


def test_an_unknown_mode_is_refused_with_the_list(helm):
    out = render(helm, sets=("mode=fast",))
    assert out.returncode != 0 and "kind:" not in out.stdout
    assert ("at '/mode': value must be one of 'debug-isolated', 'debug-parallel', "
            "'diagnose-fresh-venv', 'fresh-process', 'prod-warm'") in out.stderr


# ---- the packaged chart ----------------------------------------------------------------

@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict:
    """`helm package` with each helm: the .tgz a chart repository would serve."""
    out = {}
    for name in sorted(chartkit.HELMS):
        dest = tmp_path_factory.mktemp(name)
        proc = subprocess.run([str(chartkit.helm_binary(name)), "package", str(chartkit.CHART),
                               "-d", str(dest)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        (tgz,) = dest.glob("modelops-dask-*.tgz")
        out[name] = tgz
    return out


def test_the_package_carries_the_presets_and_no_ci_files(helm, packaged):
    with tarfile.open(packaged[helm]) as tar:
        names = tar.getnames()
        for name in PRESETS:
            member = tar.extractfile(f"modelops-dask/presets/{name}.yaml")
            assert member.read() == (chartkit.PRESETS_DIR / f"{name}.yaml").read_bytes()
    assert not [n for n in names if n.startswith("modelops-dask/ci/")], names


@pytest.mark.parametrize("name", PRESETS)
def test_mode_works_from_the_package(helm, packaged, name):
    cmd = [str(chartkit.helm_binary(helm)), "template", chartkit.RELEASE, str(packaged[helm]),
           "--namespace", chartkit.NAMESPACE, "-f", str(chartkit.MY_VALUES),
           "--set", f"mode={name}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from_package = chartkit.Render(proc.returncode, proc.stdout, proc.stderr)
    assert _mode(from_package) == _preset_mode(name)
    assert from_package.objects == render(helm, sets=(f"mode={name}",)).objects


def test_install_from_the_package_prints_the_mode(packaged):
    """`helm install` from the .tgz (helm 4 --dry-run=client needs no cluster)."""
    cmd = [str(chartkit.helm_binary("helm4")), "install", chartkit.RELEASE, str(packaged["helm4"]),
           "--namespace", chartkit.NAMESPACE, "--dry-run=client", "-f", str(chartkit.MY_VALUES),
           "--set", "mode=fresh-process"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "mode:           fresh-process (the preset)" in notes
    assert "--reuse-values --set mode=debug-isolated" in notes
    assert "WARNING" not in notes
