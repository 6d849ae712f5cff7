"""The worker image, built once per session with podman (cached by content across runs).

A machine that cannot build it (no podman, no root, no CPython of the pinned version for
the base) skips these tests with one line saying why; under CI=true that skip fails
(tests/conftest.py)."""

from __future__ import annotations

import pytest

from podkit import build


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
