"""Chart tests run on both helm majors; a missing binary fails (never skips)."""

from __future__ import annotations

import pytest

import chartkit


@pytest.fixture(params=sorted(chartkit.HELMS), scope="session")
def helm(request) -> str:
    chartkit.helm_binary(request.param)
    return request.param
