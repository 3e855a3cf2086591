"""A reproducible OCI image writer: the same files always give the same image digest.

Layers are tars with sorted entries, owner root, mtime 0, gzip without a timestamp; the
config has no creation date. `write_archive` writes one tar that is both an OCI image
layout (`oci-layout`, `index.json`, `blobs/sha256/...`, for `ctr images import` and
`skopeo`) and a docker archive (`manifest.json`, for `docker load` / `kind load
image-archive`), the form `docker save` itself writes since Docker 25.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# The deterministic tar and gzip are those of the Bazel-built service images.
from images.tools.tarball import Entry, directory, gzip_bytes, sha256_digest, symlink, write_tar
from images.tools.tarball import regular as file

__all__ = ["Entry", "Image", "directory", "file", "host_file", "layer_tar", "symlink"]

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def host_file(path: str, source: Path, mode: int | None = None) -> Entry:
    """A file copied from the host (its content only: never its owner or times)."""
    return file(path, source.read_bytes(), source.stat().st_mode & 0o7777 if mode is None else mode)


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def layer_tar(entries: list[Entry]) -> bytes:
    """The uncompressed layer: parents before children, byte-for-byte reproducible."""
    return write_tar(entries, mtime=0)


@dataclass
class Image:
    """An image: layers (lists of entries, bottom first) and its runtime config."""

    name: str  # e.g. localhost/fim-k8s/pause:local
    layers: list[list[Entry]]
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])
    user: str = ""
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)

    def blobs(self) -> tuple[Blob, Blob, list[Blob]]:
        """(manifest, config, layers) blobs."""
        tars = [layer_tar(entries) for entries in self.layers]
        layers = [Blob(_OCI_LAYER, gzip_bytes(tar)) for tar in tars]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd or None,
                "Env": self.env,
                "User": self.user,
                "WorkingDir": self.workdir,
                "Labels": self.labels or None,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256_digest(tar) for tar in tars],
            },
        }
        config_blob = Blob(_OCI_CONFIG, _canonical(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        return Blob(_OCI_MANIFEST, _canonical(manifest)), config_blob, layers

    def write_archive(self, path: Path) -> str:
        """Writes the OCI + docker archive tar; returns the manifest digest."""
        manifest, config, layers = self.blobs()
        descriptor = manifest.descriptor() | {
            "annotations": {
                "io.containerd.image.name": self.name,
                "org.opencontainers.image.ref.name": self.name.rsplit(":", 1)[1],
            }
        }
        files = {
            "oci-layout": _canonical({"imageLayoutVersion": "1.0.0"}),
            "index.json": _canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [descriptor],
                }
            ),
            "manifest.json": _canonical(
                [
                    {
                        "Config": _blob_path(config),
                        "RepoTags": [self.name],
                        "Layers": [_blob_path(layer) for layer in layers],
                    }
                ]
            ),
        }
        for blob in (manifest, config, *layers):
            files[_blob_path(blob)] = blob.data
        entries = [directory("blobs"), directory("blobs/sha256")]
        entries += [file(name, data) for name, data in files.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(layer_tar(entries))
        tmp.replace(path)
        return manifest.digest


def _blob_path(blob: Blob) -> str:
    return "blobs/sha256/" + blob.digest.removeprefix("sha256:")


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
