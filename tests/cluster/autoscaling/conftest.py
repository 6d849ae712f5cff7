"""The autoscaling loop against real components: one control plane (etcd, kube-apiserver,
kube-controller-manager with its HPA controller syncing every HPA_SYNC) and KEDA's operator
and metrics server behind the aggregation layer (support/keda.py), for this directory's
tests; stopped with nothing left behind. On a machine that cannot run them every test here
skips with one line; under CI=true that skip fails (tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from support import controlplane, keda

HPA_SYNC = "1s"   # kube-controller-manager's default is 15s: a bounded test needs less


@pytest.fixture(scope="session")
def keda_plane():
    reason = controlplane.unavailable()
    if reason:
        pytest.skip(reason)
    if keda.missing() and shutil.which("go") is None:
        pytest.skip("no Go to build KEDA (keda-operator, keda-adapter) for the autoscaling "
                    "tests: install Go 1.26+ and run `make tool-keda`")
    with controlplane.ControlPlane(kcm_args=(
            f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC}",)) as plane:
        with keda.Keda(plane) as running:
            yield plane, running
