"""read_dependencies: what a bundle declares is what its venv key and error messages use."""

from __future__ import annotations

import pytest

from modelops_runtime.bundles import read_dependencies
from modelops_runtime.errors import BundleError


def test_requirements_are_normalised_and_comments_dropped(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "# the model's dependencies\n"
        "Numpy>=1.26  # arrays\n"
        "\n"
        "scipy\n"
        "tiny @ https://example.invalid/tiny-1.0-py3-none-any.whl#sha256=00ff\n"
        "numpy>=1.26\n")
    assert read_dependencies(tmp_path) == [
        "numpy>=1.26", "scipy",
        "tiny @ https://example.invalid/tiny-1.0-py3-none-any.whl#sha256=00ff"]


def test_pyproject_dependencies(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "m"\ndependencies = ["Scikit_Learn>=1", "numpy"]\n')
    assert read_dependencies(tmp_path) == ["numpy", "scikit-learn>=1"]


def test_no_declaration_means_no_dependencies(tmp_path):
    assert read_dependencies(tmp_path) == []


@pytest.mark.parametrize("line, expected", [
    ("-r other.txt", "option line"),
    ("numpy>=>1", "invalid requirement"),
])
def test_bad_requirement_lines_are_refused_with_the_line(tmp_path, line, expected):
    (tmp_path / "requirements.txt").write_text(line + "\n")
    with pytest.raises(BundleError, match=expected) as info:
        read_dependencies(tmp_path)
    assert line in str(info.value)
