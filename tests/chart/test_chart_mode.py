"""`mode:` selects a preset shipped inside the chart; explicit mode keys win; a packaged
chart carries the presets; `--reuse-values --set mode=...` switches the mode."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

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


# ---- one source: chart/presets/; values-examples/ and chart/ci/ link to it ------------

def _links() -> dict[Path, Path]:
    """Every other place a preset appears → the chart/presets/ file it must be."""
    links = {}
    for name in PRESETS:
        links[chartkit.PRESETS_DIR / f"{name}.yaml"] = SHIPPED / f"{name}.yaml"
        links[chartkit.CHART / "ci" / f"{name}-values.yaml"] = SHIPPED / f"{name}.yaml"
    return links


def test_presets_have_one_source():
    """chart/presets/ holds the files (helm package keeps them); values-examples/<p>.yaml
    (what users pass with -f, `make run PRESET=p`) and chart/ci/<p>-values.yaml (ct's
    convention) are relative symlinks to them, so the copies cannot drift. Edit only
    chart/presets/; a new preset needs its two links (`ln -s ../chart/presets/p.yaml
    values-examples/`, `ln -s ../presets/p.yaml chart/ci/p-values.yaml`)."""
    assert sorted(p.name for p in SHIPPED.iterdir()) == sorted(f"{p}.yaml" for p in PRESETS)
    assert sorted(p.name for p in (chartkit.CHART / "ci").iterdir()) == sorted(
        f"{p}-values.yaml" for p in PRESETS)
    for name in PRESETS:
        shipped = SHIPPED / f"{name}.yaml"
        assert shipped.is_file() and not shipped.is_symlink(), (
            f"{shipped} must be a file: it is the one source and helm package keeps it")
    for link, source in _links().items():
        assert link.is_symlink(), (
            f"{link} is a copy: replace it with a symlink to {source} "
            f"(ln -sf {os.path.relpath(source, link.parent)} {link})")
        target = os.readlink(link)
        assert not os.path.isabs(target), f"{link} -> {target}: make the link relative"
        assert link.resolve() == source.resolve(), f"{link} -> {target}, not to {source}"


def test_git_stores_the_preset_links_as_links():
    """A symlink committed as a copy (e.g. from a checkout with core.symlinks=false) would
    drift again: git must record mode 120000 for each."""
    paths = [str(p.relative_to(chartkit.REPO)) for p in _links()]
    proc = subprocess.run(["git", "ls-files", "-s", "--", *paths], cwd=chartkit.REPO,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.skip("not a git checkout (or the links are not committed yet)")
    modes = {line.split("\t", 1)[1]: line.split()[0] for line in proc.stdout.splitlines()}
    for path in paths:
        assert modes.get(path) == "120000", f"git records {path} as {modes.get(path)}, not a symlink"


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
