"""The worker image, built once per session with podman (cached by content across runs).

A machine that cannot build it (no podman, no root, no CPython of the pinned version for
the base) skips these tests with one line saying why; under CI=true that skip fails
(tests/conftest.py)."""

from __future__ import annotations

import pytest

from podkit import Release, build


@pytest.fixture(scope="session")
def full_image() -> str:
    return build("full")[0]


@pytest.fixture(scope="session")
def slim_image() -> str:
    return build("slim")[0]


@pytest.fixture
def images(request):
    """``images("full")`` → the tag of that flavour (built on first use)."""
    return lambda flavour: request.getfixturevalue(f"{flavour}_image")


@pytest.fixture
def release(tmp_path):
    """``release(docs_of)`` → a :class:`podkit.Release` whose pods, containers, volumes and
    network are removed after the test (a leftover fails it)."""
    made: list[Release] = []

    def start(docs_of) -> Release:
        workdir = tmp_path / f"release-{len(made)}"
        workdir.mkdir()
        rel = Release.new(workdir, docs_of)
        made.append(rel)
        return rel

    yield start
    for rel in made:
        left = rel.down()
        assert not left, f"left behind after the test: {left}"
