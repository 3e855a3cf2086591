"""The cluster runs fim-k8s from a registry, by digest (issue 14).

The harness pushed the Bazel-built controller and fimd images (tests/e2e/conftest.py
`service_images`); the pods must name exactly those digests, the kubelet must report them as
the images it runs, the registry must serve exactly the built manifests, and the local node
must hold no imported archive of them (it pulled them).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request

import pytest

from images.push import Pushed, built_digest, insecure
from tests.cluster.cluster import Cluster
from tests.e2e.system import CONTROLLER_LABEL, FIMD_LABEL, FimSystem, images_dir

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _repository(reference: str) -> str:
    """host/path of an image reference, without its tag or digest."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def _by_name(images: tuple[Pushed, ...]) -> dict[str, Pushed]:
    if not images:
        pytest.skip("images were not pushed (KUBECONFIG without FIM_E2E_REGISTRY)")
    return {image.name: image for image in images}


def test_fim_pods_run_the_pushed_digests(
    system: FimSystem, service_images: tuple[Pushed, ...]
) -> None:
    images = _by_name(service_images)
    for label, image in [(FIMD_LABEL, images["fimd"]), (CONTROLLER_LABEL, images["controller"])]:
        assert image.digest == built_digest(images_dir(), image.name)
        pods = system.pods(label)
        assert pods, label
        for pod in pods:
            assert [c["image"] for c in pod["spec"]["containers"]] == [image.reference]
            statuses = pod["status"]["containerStatuses"]
            # The kubelet's imageID: the repository digest the runtime resolved and runs.
            assert [s["imageID"] for s in statuses] == [image.reference], pod["metadata"]["name"]


def test_the_registry_serves_the_built_manifests(service_images: tuple[Pushed, ...]) -> None:
    for image in _by_name(service_images).values():
        if not insecure(image.repository):
            pytest.skip(f"{image.repository} is not this machine's registry")
        host, _, path = image.repository.partition("/")
        request = urllib.request.Request(
            f"http://{host}/v2/{path}/manifests/{image.digest}", headers={"Accept": OCI_MANIFEST}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            body = response.read()
            assert response.headers["Docker-Content-Digest"] == image.digest
        assert "sha256:" + hashlib.sha256(body).hexdigest() == image.digest
        built = images_dir() / f"{image.name}.oci" / "blobs" / "sha256"
        assert (built / image.digest.removeprefix("sha256:")).read_bytes() == body


def test_the_node_pulled_them_and_imported_none(
    system: FimSystem, service_images: tuple[Pushed, ...], request: pytest.FixtureRequest
) -> None:
    images = _by_name(service_images)
    if os.environ.get("KUBECONFIG"):
        pytest.skip("containerd of the local cluster only")
    cluster: Cluster = request.getfixturevalue("local_cluster")
    held = cluster.node.images()
    for image in images.values():
        assert image.reference in held
        # No other name (an imported localhost/fim-k8s/<name>:local) for these images.
        named = [ref for ref in held if _repository(ref).endswith(f"/{image.name}")]
        assert [ref for ref in named if _repository(ref) != image.repository] == []
    imported = cluster.node.containerd_root / "imported"
    markers = sorted(path.name for path in imported.iterdir())
    assert not [m for m in markers if m.split(":")[0].rsplit("_", 1)[-1] in images], markers
