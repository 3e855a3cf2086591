"""Fixtures of the end-to-end suite.

Against `KUBECONFIG` when it is set (any cluster where the images are loadable, e.g. kind
after `kind load image-archive`); otherwise against the local single-node cluster of
tests/cluster, started for the session, with the Bazel-built images imported. Either way
fim-k8s is deployed with `kubectl apply -k` of FIM_E2E_OVERLAY (default
deploy/overlays/standard: deploy/base with the image references only). Under Bazel pass the
variables through: `bazel test //tests/e2e:e2e_test --test_env=KUBECONFIG=/path/to/kubeconfig
--test_env=FIM_E2E_OVERLAY=/abs/path/to/overlay`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.config import Binaries
from tests.cluster.fixtures import local_cluster  # noqa: F401 (a fixture)
from tests.e2e import nodestats
from tests.e2e.kube import Kube
from tests.e2e.system import SERVICE_IMAGES, FimSystem, artifact, ignore_missing, overlay_dir

# Lines scenarios report (timings, sizes), printed in pytest's terminal summary: output of a
# fixture's teardown would be captured, and shown only for a failure.
FIGURES = pytest.StashKey[list[str]]()


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
    cluster.import_images([artifact(image) for image in SERVICE_IMAGES])
    return Kube(kubectl, cluster.kubeconfig)


@pytest.fixture(scope="session")
def system(kube: Kube) -> FimSystem:
    fim = FimSystem(kube)
    fim.deploy(overlay_dir())
    return fim


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (so event lines of tests never mix); deleted after."""
    name = f"e2e-{request.node.name[5:25].replace('_', '-').strip('-')}-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    ignore_missing(lambda: kube.run("delete", "namespace", name, "--wait=false"))
