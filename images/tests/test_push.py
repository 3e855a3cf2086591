"""images.push against a real registry: the pinned CNCF distribution registry on a free port
of 127.0.0.1 (own storage, stopped by PID), the Bazel-built service images, skopeo, and the
pinned release's `kubectl kustomize` on a copy of the overlays."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.push import (
    SERVICE_IMAGES,
    PushError,
    built_digest,
    insecure,
    main,
    pin,
    push,
    push_all,
)
from tests.cluster.config import Binaries
from tests.cluster.controlplane import free_port
from tests.cluster.registry import ENVIRONMENT, config, serving

IMAGES = Path("images")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binaries = Binaries.from_env()
    binaries.require("registry")
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(config(root / "storage", address))
    with (root / "registry.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(binaries.registry), "serve", str(root / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", **ENVIRONMENT},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not serving(address):
            assert proc.poll() is None, (root / "registry.log").read_text()
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.1)
        yield address
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def manifest(repository: str, reference: str) -> tuple[str, bytes]:
    """(Docker-Content-Digest, body) of a manifest as the registry serves it."""
    host, _, path = repository.partition("/")
    request = urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http on loopback
        return str(response.headers["Docker-Content-Digest"]), response.read()


def test_every_image_is_pushed_by_its_built_digest(registry: str) -> None:
    pushed = push_all(registry, IMAGES, tag="1.2.3")
    assert [image.name for image in pushed] == list(SERVICE_IMAGES)
    for image in pushed:
        assert image.repository == f"{registry}/fim-k8s/{image.name}"
        assert image.digest == built_digest(IMAGES, image.name)
        served, body = manifest(image.repository, image.digest)
        assert served == image.digest == "sha256:" + hashlib.sha256(body).hexdigest()
        blob = IMAGES / f"{image.name}.oci" / "blobs" / "sha256" / image.digest[7:]
        assert blob.read_bytes() == body  # byte for byte the manifest Bazel built
        assert manifest(image.repository, "1.2.3")[0] == image.digest


def test_a_digest_other_than_the_built_one_is_refused(registry: str, tmp_path: Path) -> None:
    shutil.copytree(IMAGES / "fimd.oci", tmp_path / "fimd.oci")
    wrong = built_digest(IMAGES, "controller")
    (tmp_path / "fimd.digest").write_text(f"localhost/fim-k8s/fimd:local {wrong}\n")
    with pytest.raises(PushError):
        push(registry, tmp_path, "fimd")


def test_only_loopback_registries_skip_tls() -> None:
    assert insecure("127.0.0.1:5000")
    assert insecure("localhost:5000/team")
    assert not insecure("registry.example.com")
    assert not insecure("10.0.0.1:5000")


def _render(overlay: Path) -> str:
    kubectl = Binaries.from_env().kube("kubectl")
    done = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=True
    )
    return done.stdout


def _images(rendered: str) -> list[str]:
    return sorted(
        line.split("image:", 1)[1].strip()
        for line in rendered.splitlines()
        if line.strip().startswith(("image:", "- image:"))
    )


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """A real copy of the deploy tree (kustomize refuses Bazel's runfiles symlinks)."""
    return shutil.copytree("deploy", tmp_path / "deploy")


def test_release_writes_the_digests_into_the_production_overlay(
    registry: str, deploy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kustomization = deploy / "overlays" / "production" / "kustomization.yaml"
    before = kustomization.read_text()
    argv = [registry, "--images-dir", str(IMAGES), "--write-images", str(kustomization)]
    assert main(argv) == 0
    expected = {f"{registry}/fim-k8s/{n}@{built_digest(IMAGES, n)}" for n in SERVICE_IMAGES}
    printed = capsys.readouterr().out.splitlines()
    assert sorted(line for line in printed if "@sha256:" in line) == sorted(
        f"{name} {registry}/fim-k8s/{name}@{built_digest(IMAGES, name)}" for name in SERVICE_IMAGES
    )
    images = _images(_render(kustomization.parent))
    assert images
    assert set(images) == expected  # every container, pinned by digest
    written = kustomization.read_text()
    # Only the images block changed: the comment and the rest are kept.
    assert written.split("images:")[0].startswith(before.split("images:")[0].rstrip("\n"))
    assert written.split("patches:")[1] == before.split("patches:")[1]
    assert main(argv) == 0
    assert kustomization.read_text() == written  # writing the same digests changes nothing


def test_pin_wraps_an_overlay_with_the_pushed_digests(
    registry: str, deploy: Path, tmp_path: Path
) -> None:
    pushed = push_all(registry, IMAGES)
    kubectl = str(Binaries.from_env().kube("kubectl"))
    overlay = deploy / "overlays" / "standard"
    assert not set(_images(_render(overlay))) & {image.reference for image in pushed}
    out = pin(overlay, tmp_path / "pinned", pushed, kubectl)
    rendered = _render(out)
    assert set(_images(rendered)) == {image.reference for image in pushed}
    policies = {line.split(":", 1)[1].strip() for line in rendered.splitlines()
                if line.strip().startswith("imagePullPolicy:")}  # fmt: skip
    assert policies == {"IfNotPresent"}


def test_pin_fails_for_an_overlay_without_the_images(registry: str, tmp_path: Path) -> None:
    pushed = push_all(registry, IMAGES)
    kubectl = str(Binaries.from_env().kube("kubectl"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "kustomization.yaml").write_text("resources: [pod.yaml]\n")
    (other / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: c, image: example.com/other/fimd-helper:1}]}\n"
    )
    with pytest.raises(PushError, match="controller, fimd"):
        pin(other, tmp_path / "pinned", pushed, kubectl)
