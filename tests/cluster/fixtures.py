"""pytest fixtures for tests that need a real Kubernetes API server.

Use them from any test package by naming this module as a plugin in its conftest.py:

    pytest_plugins = ["tests.cluster.fixtures"]

and in BUILD.bazel depend on `//tests/cluster:fixtures` with `tags = HOST_TEST_TAGS` and
`size = "enormous"` (tools/bazel/pytest.bzl), or `["no-sandbox"]` and `size = "large"` for
`control_plane` alone. The binaries must be in the cache
(`bash tools/cluster/build.sh apiserver`); if they are not, the fixture fails with that
command in its message: it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.controlplane import STANDARD_APISERVER_PORT, ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the whole test session, on free ports of 127.0.0.1.

    `control_plane.kubeconfig` is the admin kubeconfig; `control_plane.kubeconfig_for(user,
    groups)` one for any identity. Stopped (by PID) at the end of the session; the session
    fails if a component tried to send anything off the machine.
    """
    cluster = Cluster(tmp_path_factory.mktemp("control-plane"), apiserver_only=True)
    cluster.up()
    try:
        yield cluster.control_plane
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The full single-node cluster (containerd, kubelet, kube-proxy, controller-manager,
    scheduler) for the whole session, API server on 10.244.77.1:6443 (the bridge's address;
    pods use the `kubernetes` Service). Base images are imported; teardown restores the host
    and fails the session if the network guard stopped anything."""
    cluster = Cluster(
        tmp_path_factory.mktemp("cluster"),
        apiserver_only=False,
        apiserver_port=STANDARD_APISERVER_PORT,
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
