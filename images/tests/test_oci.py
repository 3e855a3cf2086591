"""The image writer is reproducible and writes archives both OCI and docker tools read."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from images.oci import Image, directory, file, symlink


def _image() -> Image:
    layer = [file("bin/tool", b"#!/bin/sh\n", 0o755), directory("bin"), symlink("bin/t", "tool")]
    return Image("localhost/fim-k8s/sample:local", [layer], entrypoint=["/bin/tool"])


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_same_input_gives_the_same_bytes_and_digest(tmp_path: Path) -> None:
    first = _image().write_archive(tmp_path / "a.tar")
    second = _image().write_archive(tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_archive_is_a_consistent_oci_layout_and_docker_archive(tmp_path: Path) -> None:
    digest = _image().write_archive(tmp_path / "image.tar")
    files = _members(tmp_path / "image.tar")
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert index["manifests"][0]["digest"] == digest
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "localhost/fim-k8s/sample:local"
    manifest = json.loads(files["blobs/sha256/" + digest.removeprefix("sha256:")])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    docker = json.loads(files["manifest.json"])
    assert docker[0]["RepoTags"] == ["localhost/fim-k8s/sample:local"]
    assert all(layer in files for layer in docker[0]["Layers"])


def test_layer_entries_are_sorted_and_owned_by_root_at_time_zero(tmp_path: Path) -> None:
    digest = _image().write_archive(tmp_path / "image.tar")
    files = _members(tmp_path / "image.tar")
    manifest = json.loads(files["blobs/sha256/" + digest[7:]])
    layer_path = tmp_path / "layer.tar.gz"
    layer_path.write_bytes(files["blobs/sha256/" + manifest["layers"][0]["digest"][7:]])
    with tarfile.open(layer_path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["bin", "bin/t", "bin/tool"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 0)}
