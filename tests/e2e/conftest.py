"""Fixtures of the end-to-end suite.

Against `KUBECONFIG` when it is set (any cluster); otherwise against the local single-node
cluster of tests/cluster, started for the session. The Bazel-built service images are pushed
by digest to a registry: the local cluster's own (127.0.0.1:5000, containerd pulls from it),
or for another cluster FIM_E2E_REGISTRY (one its nodes can pull from; without it the overlay's
image names are used as they are, e.g. after `kind load image-archive`). fim-k8s is deployed
with `kubectl apply -k` of FIM_E2E_OVERLAY (default deploy/overlays/standard: deploy/base
with the image references only), pinned to the pushed digests by a generated kustomization
(tests.e2e.system.deployable). Under Bazel pass the variables through: `bazel test
//tests/e2e:e2e_test --test_env=KUBECONFIG=/path/to/kubeconfig
--test_env=FIM_E2E_REGISTRY=registry.example:5000 --test_env=FIM_E2E_OVERLAY=/abs/overlay`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.push import Pushed
from tests.cluster.cluster import Cluster
from tests.cluster.config import Binaries
from tests.cluster.fixtures import local_cluster  # noqa: F401 (a fixture)
from tests.e2e import nodestats
from tests.e2e.kube import Kube
from tests.e2e.system import FimSystem, ignore_missing, overlay_dir, push_service_images

# Lines scenarios report (timings, sizes), printed in pytest's terminal summary: output of a
# fixture's teardown would be captured, and shown only for a failure.
FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "session_end: runs after every other test of the session (it checks something set up "
        "early whose clock, such as a scheduled scan, runs meanwhile)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("session_end") is not None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> list[str]:
    """Append lines here to have them printed at the end of the session."""
    return request.config.stash.setdefault(FIGURES, [])


@pytest.fixture(scope="session")
def host_sysctls() -> dict[str, str]:
    """This machine's fs.inotify.* and fs.mqueue.* before the cluster or fim-k8s started:
    a test compares them afterwards (fim-k8s must never change a node's sysctls)."""
    return nodestats.host_sysctls()


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, host_sysctls: dict[str, str]) -> Kube:
    kubectl = Binaries.from_env().kube("kubectl")
    if os.environ.get("KUBECONFIG"):
        return Kube(kubectl, Path(os.environ["KUBECONFIG"]))
    cluster: Cluster = request.getfixturevalue("local_cluster")
    return Kube(kubectl, cluster.kubeconfig)


@pytest.fixture(scope="session")
def service_images(
    kube: Kube, request: pytest.FixtureRequest, figures: list[str]
) -> tuple[Pushed, ...]:
    """controller and fimd as pushed for this session (empty: deployed as the overlay names
    them, for a cluster that has them already)."""
    registry = os.environ.get("FIM_E2E_REGISTRY", "")
    if not os.environ.get("KUBECONFIG"):
        cluster: Cluster = request.getfixturevalue("local_cluster")
        registry = cluster.registry
    if not registry:
        return ()
    started = time.monotonic()
    pushed = tuple(push_service_images(registry))
    figures.append(f"images pushed by digest to {registry} in {time.monotonic() - started:.1f} s")
    return pushed


@pytest.fixture(scope="session")
def system(kube: Kube, service_images: tuple[Pushed, ...]) -> FimSystem:
    fim = FimSystem(kube, service_images)
    fim.deploy(overlay_dir())
    return fim


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (so event lines of tests never mix); deleted after."""
    name = f"e2e-{request.node.name[5:25].replace('_', '-').strip('-')}-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    ignore_missing(lambda: kube.run("delete", "namespace", name, "--wait=false"))
