"""The chart against a real Kubernetes API server: one control plane (etcd, kube-apiserver,
kube-controller-manager from .tools/bin, `make tool-k8s`) for the whole session, stopped
with nothing left behind. On a machine that cannot run it (not Linux, no Go to build it)
every test here skips with one line; under CI=true that skip fails (tests/conftest.py)."""

from __future__ import annotations

import itertools
import json
import re

import pytest

import kubekit
from support import controlplane


_numbers = itertools.count()


@pytest.fixture(scope="session")
def kube():
    reason = controlplane.unavailable()
    if reason:
        pytest.skip(reason)
    with controlplane.ControlPlane() as plane:
        version = json.loads(plane.version)
        kubekit.SESSION["server"] = (f"kube-apiserver {version['gitVersion']} "
                                     f"({version['platform']}, {version['goVersion']})")
        yield kubekit.Kube(plane)


@pytest.fixture(params=sorted(kubekit.HELMS))
def helm(request) -> str:
    kubekit.helm_binary(request.param)
    return request.param


@pytest.fixture
def namespace(kube, request) -> str:
    """A fresh namespace with Pod Security `restricted` enforced, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    return kube.restricted_namespace(f"t{next(_numbers)}-{name}"[:63].strip("-"))


def pytest_terminal_summary(terminalreporter):
    if "server" in kubekit.SESSION:
        c = kubekit.CASES
        terminalreporter.write_line(
            f"chart against {kubekit.SESSION['server']}: {c['install']} installs, "
            f"{c['upgrade']} upgrades, {c['rollback']} rollbacks")
