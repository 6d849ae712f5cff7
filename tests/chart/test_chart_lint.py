"""CI's lint fails when the values it lints with do not render.

`helm lint --strict` renders in lint mode, where a template's `fail` is only logged, so lint
alone passes the chart's defaults although `helm install` refuses them. `make lint` therefore
lints with ci/lint-values.yaml and runs ci/render-check.sh (helm template, both helms)."""

from __future__ import annotations

import subprocess

import chartkit

RENDER_CHECK = chartkit.REPO / "ci" / "render-check.sh"
LINT_VALUES = chartkit.REPO / "ci" / "lint-values.yaml"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=300,
                          cwd=chartkit.REPO)


def test_helm_lint_alone_passes_defaults_that_do_not_render(helm):
    """Why the render check exists: this is what lint did with the defaults."""
    binary = str(chartkit.helm_binary(helm))
    lint = _run(binary, "lint", "--strict", str(chartkit.CHART))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "bundles.repo is not set" in lint.stdout + lint.stderr
    render = chartkit.render(helm, mine=False)
    assert render.returncode != 0 and "bundles.repo is not set" in render.stderr


def test_render_check_fails_on_the_defaults_with_the_clear_message(helm, tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("{}\n")
    out = _run("bash", str(RENDER_CHECK), str(chartkit.helm_binary(helm)), str(chartkit.CHART),
               str(defaults))
    assert out.returncode == 1
    assert "render check failed" in out.stderr
    assert ("bundles.repo is not set: the workers need a bundle repository and the chart has "
            "no default") in out.stderr


def test_render_check_passes_the_lint_values_and_every_preset(helm):
    out = _run("bash", str(RENDER_CHECK), str(chartkit.helm_binary(helm)), str(chartkit.CHART),
               str(LINT_VALUES))
    assert out.returncode == 0, out.stderr
    # the values alone, then each preset by mode: and by -f
    assert f"render check: {1 + 2 * len(chartkit.PRESETS)} renders" in out.stdout


def test_make_lint_runs_the_render_check_on_both_helms_with_the_lint_values():
    plan = _run("make", "-n", "lint").stdout
    assert f"ci/render-check.sh {chartkit.HELMS['helm3'].relative_to(chartkit.REPO)} chart " \
           "ci/lint-values.yaml" in plan
    assert f"ci/render-check.sh {chartkit.HELMS['helm4'].relative_to(chartkit.REPO)} chart " \
           "ci/lint-values.yaml" in plan
    assert "lint --strict chart -f ci/lint-values.yaml" in plan
    ct = (chartkit.REPO / "ci" / "ct.yaml").read_text()
    assert "helm-lint-extra-args: --strict --values ci/lint-values.yaml" in ct
